"""``GET /api/events``: the live feed (SPEC 5), as SSE or, on an upgrade request, a websocket.

This is the basic feed: a ``snapshot`` message built from the router, then every bus event as it
is published (``lagged`` included when this client was too slow). ``?logs=1`` and anything else the
full feed adds later hook in here.

The subscription is opened *before* the snapshot is taken, so no event published between the two
is lost (an event may at worst repeat what the snapshot already shows).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from llama_swap_trio import __version__
from llama_swap_trio.config.model import Config
from llama_swap_trio.feed.bus import EventBus, Subscription
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.routing.api import RouterLike, RouterSnapshot

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-accel-buffering", b"no"),
]


def snapshot_message(config: Config, snapshot: RouterSnapshot) -> dict[str, Any]:
    """The first message of every feed connection."""
    models: list[dict[str, Any]] = []
    for status in snapshot.models:
        record: dict[str, Any] = {"id": status.id, "state": str(status.state)}
        model = config.models.get(status.id)
        if model is not None and model.name:
            record["name"] = model.name
        record["ttl"] = model.ttl if model is not None else 0
        record["in_flight"] = status.in_flight
        models.append(record)
    return {
        "type": "snapshot",
        "version": __version__,
        "models": models,
        "queue": [{"model": entry.model, "position": entry.position} for entry in snapshot.queue],
    }


async def handle_events(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    config: Config,
    router: RouterLike,
    bus: EventBus,
) -> None:
    """Serve one feed client until it leaves or the bus closes (shutdown)."""
    with bus.subscribe() as subscription:
        first = snapshot_message(config, router.snapshot())
        if scope["type"] == "websocket":
            await _serve_websocket(receive, send, subscription, first)
        else:
            await _serve_sse(receive, send, subscription, first)


async def _serve_sse(
    receive: Receive, send: Send, subscription: Subscription, first: dict[str, Any]
) -> None:
    async def watch_disconnect(cancel_scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        cancel_scope.cancel()

    def frame(message: object) -> bytes:
        return b"data: " + json.dumps(message).encode() + b"\n\n"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_disconnect, nursery.cancel_scope)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": frame(first), "more_body": True})
        async for event in subscription:
            await send({"type": "http.response.body", "body": frame(event), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


async def _serve_websocket(
    receive: Receive, send: Send, subscription: Subscription, first: dict[str, Any]
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})

    async def watch_disconnect(cancel_scope: trio.CancelScope) -> None:
        # messages from the client are ignored; only its leaving matters
        while (await receive())["type"] != "websocket.disconnect":
            pass
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_disconnect, nursery.cancel_scope)
        await send({"type": "websocket.send", "text": json.dumps(first)})
        async for event in subscription:
            await send({"type": "websocket.send", "text": json.dumps(event)})
        await send({"type": "websocket.close", "code": 1001, "reason": "shutting down"})
        nursery.cancel_scope.cancel()
