"""``GET /api/events``: the live feed (SPEC 5), as SSE or, on an upgrade request, a websocket.

Every connection gets a ``snapshot`` built from the router, then every bus event as it is
published: ``model_state``, ``swap``, ``queue``, ``request_start``, ``request_progress``,
``request``, ``lagged`` when this client was too
slow, and ``log`` only when it asked with ``?logs=1`` (the bus filters those, so a chatty upstream
cannot lag a client that does not show logs). The API key is checked by the app before we get here.

The subscription is opened *before* the snapshot is taken, so no event published between the two
is lost (an event may at worst repeat what the snapshot already shows).

``snapshot.version`` is the daemon's package version (what ``watch`` shows as "daemon X"). SPEC 5
does not say which version; the message shapes are fixed by the SPEC itself, so the daemon's
version is the one a client can do something with (report it, compare it).

Shutdown: the daemon closes the bus as soon as it begins to shut down. Each connection then sends
what it had buffered and ends: a websocket with close code 1001 ("going away"), an SSE response by
ending its body. The flush is bounded (``CLOSE_FLUSH_SECONDS``): a client that reads nothing
cannot hold up the graceful drain, it is cut without its close frame. So feed connections never
keep hypercorn's drain waiting; in exchange a client does not see the ``stopping``/``shutdown``
states of the upstreams, which change after the drain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import trio

from llama_swap_trio import __version__
from llama_swap_trio.config.model import Config
from llama_swap_trio.edge.disconnect import cancel_when_client_leaves
from llama_swap_trio.feed.bus import EventBus, Subscription
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.routing.api import RouterLike, RouterSnapshot
from llama_swap_trio.routing.resources import memory_configured, resources_body, sizes

#: after shutdown begins, how long a connection may take to send what it buffered and close
CLOSE_FLUSH_SECONDS = 1.0
#: the websocket close code on shutdown: "going away"
GOING_AWAY = 1001

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-accel-buffering", b"no"),
]
_TRUE = frozenset({"1", "true", "yes", "on"})


def snapshot_message(
    config: Config, snapshot: RouterSnapshot, requests: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The first message of every feed connection; ``requests``: the started, unfinished ones
    (SPEC 6.2, ``[{id, model, path, at}]``)."""
    models: list[dict[str, Any]] = []
    for status in snapshot.models:
        record: dict[str, Any] = {"id": status.id, "state": str(status.state)}
        model = config.models.get(status.id)
        if model is not None and model.name:
            record["name"] = model.name
        record["ttl"] = model.ttl if model is not None else 0
        record["in_flight"] = status.in_flight
        models.append(record)
    message: dict[str, Any] = {
        "type": "snapshot",
        "version": __version__,
        "models": models,
        "queue": [{"model": entry.model, "position": entry.position} for entry in snapshot.queue],
        "requests": requests if requests is not None else [],
    }
    if memory_configured(config):
        # /api/resources, plus every sized model's size so a client can follow the states
        message["resources"] = {
            **resources_body(config, snapshot),
            "sizes": sizes(config, snapshot),
        }
    return message


def wants_logs(scope: Scope) -> bool:
    """``?logs=1`` (also ``true``, ``yes``, ``on``): the client wants ``log`` messages."""
    query: bytes = scope.get("query_string", b"")
    if b"logs=" not in query:
        return False
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return any(name == "logs" and value.lower() in _TRUE for name, value in pairs)


async def handle_events(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    config: Config,
    router: RouterLike,
    bus: EventBus,
    requests: Callable[[], list[dict[str, Any]]] | None = None,
) -> None:
    """Serve one feed client until it leaves or the bus closes (shutdown); ``requests`` gives
    the snapshot's open requests."""
    with bus.subscribe(logs=wants_logs(scope)) as subscription:
        first = snapshot_message(
            config, router.snapshot(), requests() if requests is not None else None
        )
        if scope["type"] == "websocket":
            await _serve_websocket(receive, send, subscription, first)
        else:
            await _serve_sse(receive, send, subscription, first)


def _frame(message: object) -> bytes:
    return b"data: " + json.dumps(message).encode() + b"\n\n"


async def _bound_after_close(subscription: Subscription, relay: trio.CancelScope) -> None:
    """Once the bus closes, give the relay ``CLOSE_FLUSH_SECONDS`` to finish, then cut it."""
    await subscription.wait_closed()
    relay.deadline = min(relay.deadline, trio.current_time() + CLOSE_FLUSH_SECONDS)


async def _serve_sse(
    receive: Receive, send: Send, subscription: Subscription, first: dict[str, Any]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_client_leaves, receive, nursery.cancel_scope)
        with trio.CancelScope() as relay:
            nursery.start_soon(_bound_after_close, subscription, relay)
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": _frame(first), "more_body": True})
            async for event in subscription:
                await send({"type": "http.response.body", "body": _frame(event), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


async def _serve_websocket(
    receive: Receive, send: Send, subscription: Subscription, first: dict[str, Any]
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    # messages from the client are ignored; only its leaving matters
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_client_leaves, receive, nursery.cancel_scope)
        with trio.CancelScope() as relay:
            nursery.start_soon(_bound_after_close, subscription, relay)
            await send({"type": "websocket.send", "text": json.dumps(first)})
            async for event in subscription:
                await send({"type": "websocket.send", "text": json.dumps(event)})
            await send({"type": "websocket.close", "code": GOING_AWAY, "reason": "shutting down"})
        nursery.cancel_scope.cancel()
