"""Test support for the forwarding engine: real hypercorn servers on 127.0.0.1:0.

``httpx.ASGITransport`` buffers whole responses (research python-stack 2.6), so streaming and
disconnect behaviour is tested against real sockets: an in-process fake upstream app and a thin
proxy app that calls the forwarding functions, each served by hypercorn on an ephemeral port
(or the proxy by the front door): so both real edges (edge/contract.py) are tested end to end.
The app's side of the contract alone runs against a fake edge (fake_edge.py, test_app_edge.py).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from llama_swap_trio.config.model import ModelConfig, Timeouts
from llama_swap_trio.edge import server as front_door
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.asgi import Receive, Scope, Send, answer_lifespan
from llama_swap_trio.http.forward import ForwardResult, forward_http
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.http.websocket_tunnel import tunnel_websocket
from llama_swap_trio.routing.api import Grant
from llama_swap_trio.upstream.api import UpstreamState

App = Callable[[Scope, Receive, Send], Awaitable[None]]


def model_config(proxy: str, *, connect: float = 5.0, response_header: float = 0.0) -> ModelConfig:
    return ModelConfig(
        id="m1",
        argv=("true",),
        cmd="true",
        cmd_stop="",
        proxy=proxy,
        port=None,
        check_endpoint="none",
        ttl=0,
        unload_timeout=1,
        aliases=(),
        env={},
        timeouts=Timeouts(connect=connect, response_header=response_header),
    )


@attrs.define
class FakeUpstream:
    """Stands in for an Upstream: only what the forwarder reads."""

    model: ModelConfig
    generation: int = 1
    state: UpstreamState = UpstreamState.READY

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def set_in_flight(self, count: int) -> None:
        return None

    def rearm_idle(self) -> None:
        return None


def grant_for(proxy: str, *, generation: int = 1, **timeouts: float) -> Grant:
    model = model_config(proxy, **timeouts)
    return Grant(model=model, upstream=FakeUpstream(model, generation))


def closed_port() -> int:
    """A port nothing listens on (bound then released; good enough on a test machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def with_lifespan(app: App) -> App:
    """Hypercorn-trio needs the lifespan protocol implemented (research python-stack 1.1)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await app(scope, receive, send)

    return wrapped


async def start_server(nursery: trio.Nursery, app: App) -> str:
    """Serve ``app`` on 127.0.0.1:0 in ``nursery``; return its base URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.5
    config.errorlog = logging.getLogger("tests.hypercorn")
    binds: list[str] = await nursery.start(partial(serve, with_lifespan(app), config))
    return binds[0]


async def start_front_door(nursery: trio.Nursery, app: App) -> str:
    """Serve ``app`` with the daemon's own server (edge/server.py) on 127.0.0.1:0."""
    config = HypercornConfig()
    config.graceful_timeout = 0.5
    config.errorlog = logging.getLogger("tests.hypercorn")
    urls: list[str] = await nursery.start(
        partial(front_door.serve, app, config, "127.0.0.1", 0, shutdown_trigger=trio.sleep_forever)
    )
    return urls[0]


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


# -- the fake upstream ----------------------------------------------------------------------------


@attrs.define
class Recorder:
    """What the fake upstream saw, and gates the tests open."""

    requests: list[dict[str, Any]] = attrs.field(factory=list)
    #: set when the upstream app got ``http.disconnect`` while streaming
    disconnected: trio.Event = attrs.field(factory=trio.Event)
    disconnected_at: float | None = None
    #: the /sse endpoint waits on this before sending the rest of its stream
    gate: trio.Event = attrs.field(factory=trio.Event)


def upstream_app(rec: Recorder) -> App:
    """The fake upstream: one behaviour per path."""

    async def watch_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        rec.disconnected_at = trio.current_time()
        rec.disconnected.set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await websocket_echo(scope, receive, send)
            return
        path: str = scope["path"]
        body = await read_body(receive)
        rec.requests.append(
            {
                "method": scope["method"],
                "raw_path": scope["raw_path"],
                "query": scope["query_string"],
                "headers": list(scope["headers"]),
                "body": body,
            }
        )
        sse_head = [(b"content-type", b"text/event-stream")]
        if path.startswith("/echo"):
            await respond(send, 200, b'{"ok": true}', [(b"content-type", b"application/json")])
        elif path == "/headers":
            await respond(
                send,
                200,
                b"hello",
                [
                    (b"content-type", b"text/plain"),
                    (b"connection", b"x-hop"),
                    (b"x-hop", b"1"),
                    (b"keep-alive", b"timeout=5"),
                    (b"server", b"fake-upstream"),
                    (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
                    (b"x-kept", b"yes"),
                ],
            )
        elif path == "/json-usage":
            answer = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
            await respond(
                send, 200, json.dumps(answer).encode(), [(b"content-type", b"application/json")]
            )
        elif path in ("/sse", "/v1/chat/completions"):
            await send({"type": "http.response.start", "status": 200, "headers": sse_head})
            chunk = {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}
            await send({"type": "http.response.body", "body": sse(chunk), "more_body": True})
            if path == "/sse":
                await rec.gate.wait()
            last = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
            await send({"type": "http.response.body", "body": sse(last), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        elif path == "/forever":
            await send({"type": "http.response.start", "status": 200, "headers": sse_head})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect, receive)
                while not rec.disconnected.is_set():
                    await send(
                        {"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True}
                    )
                    await trio.sleep(0.02)
        elif path == "/die":
            await send({"type": "http.response.start", "status": 200, "headers": sse_head})
            await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
            await trio.sleep(0.05)
            # return without the last body message: hypercorn drops the connection
        elif path == "/length-then-die":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"100")],
                }
            )
            await trio.sleep(0.05)
            # return before a single body byte: hypercorn drops the connection after the head
        elif path == "/slow-head":
            await watch_disconnect(receive)
        elif path == "/error":
            error = {"error": {"message": "context too long", "type": "invalid_request_error"}}
            await respond(
                send, 400, json.dumps(error).encode(), [(b"content-type", b"application/json")]
            )
        else:
            await respond(send, 404, b"not found")

    return app


async def websocket_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes messages; ``close:<code>`` closes with that code."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    protocols = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": "echo:" + text})
        else:
            await send({"type": "websocket.send", "bytes": b"echo:" + message["bytes"]})


# -- the thin proxy -------------------------------------------------------------------------------


@attrs.define
class ProxyState:
    grant: Grant
    pool: ClientPool
    results: list[ForwardResult] = attrs.field(factory=list)
    #: replaces the request body before forwarding (to test content-length of a rewrite)
    rewrite: Callable[[bytes], bytes] | None = None


async def render_error(send: Send, error: ProxyError) -> None:
    headers = [(b"content-type", b"application/json")]
    await respond(send, error.status, json.dumps(error.body()).encode(), headers)


def proxy_app(state: ProxyState) -> App:
    """Calls forward_http (or the websocket tunnel) with a fixed grant, like the real app will."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            target = scope["raw_path"].decode()
            await tunnel_websocket(scope, receive, send, grant=state.grant, target=target)
            return
        body = await read_body(receive)
        if state.rewrite is not None:
            body = state.rewrite(body)
        try:
            result = await forward_http(
                scope, receive, send, grant=state.grant, body=body, pool=state.pool
            )
        except ProxyError as exc:
            await render_error(send, exc)
            return
        state.results.append(result)

    return app


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true (never sleep to wait for a state)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
