"""The front door (edge/server.py) with small ASGI apps, over real sockets on 127.0.0.1:0.

A raw client writes exact bytes and reads exact bytes, so the tests see framing, keep-alive and
closing as a client does. Requests the front door does not serve itself go to hypercorn, and the
tests check they are still answered.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.edge import server
from llama_swap_trio.edge.contract import EDGE_EXTENSION
from llama_swap_trio.edge.disconnect import ClientWatch
from llama_swap_trio.edge.handoff import hypercorn_config
from llama_swap_trio.edge.server import MAX_DRAIN
from llama_swap_trio.http.asgi import Receive, Scope, Send

pytestmark = pytest.mark.trio

WAIT = 10


@asynccontextmanager
async def serving(
    app: Any, *, graceful: float = 5.0, tls: ssl.SSLContext | None = None, **settings: Any
) -> AsyncIterator[tuple[int, trio.Event]]:
    """Serve ``app`` with ``[server]`` ``settings`` (HTTPS with ``tls``); yields (port, shutdown
    trigger). Stops (gracefully) at the end."""
    stop = trio.Event()
    config = ServerConfig(**settings)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(
                server.serve,
                app,
                hypercorn_config(config, graceful),
                "127.0.0.1",
                0,
                shutdown_trigger=stop.wait,
                server=config,
                tls=tls,
            )
        )
        port = int(urls[0].rsplit(":", 1)[1])
        yield port, stop
        stop.set()


class Client:
    """A raw HTTP/1.1 client connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def read_until(self, marker: bytes) -> bytes:
        with trio.fail_after(WAIT):
            while marker not in self.buf:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(self.buf)
                self.buf += data
        out, _, self.buf = self.buf.partition(marker)
        return out + marker

    async def read_exactly(self, n: int) -> bytes:
        with trio.fail_after(WAIT):
            while len(self.buf) < n:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(self.buf)
                self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def read_to_eof(self) -> bytes:
        with trio.fail_after(WAIT):
            while data := await self.stream.receive_some(65536):
                self.buf += data
        out, self.buf = self.buf, b""
        return out

    async def response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """(status line, headers, body) of a Content-Length or chunked response."""
        head = await self.read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.read_exactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size = int((await self.read_until(b"\r\n"))[:-2], 16)
                if size == 0:
                    await self.read_until(b"\r\n")
                    break
                body += (await self.read_exactly(size + 2))[:-2]
        else:
            body = b""
        return lines[0], headers, body


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield Client(stream)


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n" % (path.encode(), len(body))
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def get(path: str, *extra: bytes) -> bytes:
    return (
        b"GET %s HTTP/1.1\r\nHost: t\r\n" % path.encode()
        + b"".join(h + b"\r\n" for h in extra)
        + b"\r\n"
    )


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class Echo:
    """Answers the request body back with Content-Length; records every scope."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            message = await receive()  # connect
            message = await receive()
            await send({"type": "websocket.send", "text": "echo " + message.get("text", "")})
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        body = await read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"x-path", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- the plain path --------------------------------------------------------------------------------


async def test_keep_alive_requests_get_complete_responses_and_the_scope_hypercorn_builds() -> None:
    app = Echo()
    async with serving(app) as (port, _), connect(port) as client:
        for body in (b'{"model": "a"}', b"second"):
            await client.stream.send_all(post("/v1/chat%2Fx?y=1", body, b"X-Key: v"))
            status, headers, answer = await client.response()
            assert status == b"HTTP/1.1 200 OK"
            assert answer == body
            assert b"date" in headers
            assert b"server" not in headers
            assert b"connection" not in headers
    scope = app.scopes[0]
    # the front door's own extension: the request's edge (edge/contract.py), with its watch
    edge = scope["extensions"].pop(EDGE_EXTENSION)
    assert isinstance(edge.watch, ClientWatch)
    assert callable(edge.relay)
    assert {k: v for k, v in scope.items() if k not in ("client", "server")} == {
        "type": "http",
        "http_version": "1.1",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/x",
        "raw_path": b"/v1/chat%2Fx",
        "query_string": b"y=1",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"content-length", b"14"), (b"x-key", b"v")],
        "extensions": {},
    }
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", port)


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving(Echo()) as (port, _), connect(port) as client:
        await client.stream.send_all(post("/a", b"one") + post("/b", b"two") + post("/c", b""))
        assert [(await client.response())[2] for _ in range(3)] == [b"one", b"two", b""]


async def test_a_body_sent_in_pieces_reaches_the_app_whole() -> None:
    async with serving(Echo()) as (port, _), connect(port) as client:
        request = post("/a", b"x" * 200_000)
        for i in range(0, len(request), 7_000):
            await client.stream.send_all(request[i : i + 7_000])
        assert (await client.response())[2] == b"x" * 200_000


async def test_a_stream_is_chunked_and_its_head_arrives_before_the_first_event() -> None:
    go_on = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await go_on.wait()
        for part in (b"data: 1\n\n", b"", b"data: 2\n\n"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/events"))
        head = await client.read_until(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        go_on.set()
        assert await client.read_until(b"0\r\n\r\n") == (
            b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
        )


async def test_head_and_204_responses_carry_no_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        status = 204 if scope["path"] == "/empty" else 200
        headers = [(b"content-length", b"5")] if status == 200 else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello" if status == 200 else b""})

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n" + get("/empty"))
        head = await client.read_until(b"\r\n\r\n")
        assert b"content-length: 5" in head
        second = await client.read_until(b"\r\n\r\n")  # no body bytes in between
        assert second.startswith(b"HTTP/1.1 204 No Content\r\n")
        await client.stream.send_all(get("/x"))
        assert (await client.response())[2] == b"hello"


async def test_connection_close_is_honoured() -> None:
    async with serving(Echo()) as (port, _), connect(port) as client:
        await client.stream.send_all(post("/a", b"bye", b"Connection: close"))
        _, headers, body = await client.response()
        assert headers[b"connection"] == b"close"
        assert body == b"bye"
        assert await client.read_to_eof() == b""


# -- the app misbehaving -------------------------------------------------------------------------


async def test_an_app_that_fails_before_answering_gives_500_and_the_connection_closes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/"))
        status, _, _ = await client.response()
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert await client.read_to_eof() == b""


async def test_a_response_the_app_leaves_unfinished_is_cut_and_the_connection_closes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/"))
        await client.read_until(b"\r\n\r\n")
        rest = await client.read_to_eof()
        assert rest == b"7\r\npartial\r\n"  # no terminating chunk: the client knows it is cut


async def test_a_body_the_app_did_not_read_is_skipped_or_the_connection_closed() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"no"})

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(post("/a", b"small") + get("/b"))
        assert (await client.response())[0].startswith(b"HTTP/1.1 413")
        assert (await client.response())[0].startswith(b"HTTP/1.1 413")  # same connection
        # a body too large to skip: the answer still arrives (no RST), then the close
        big = b"x" * (MAX_DRAIN + 100_000)
        await client.stream.send_all(post("/a", big)[: 200 + MAX_DRAIN])
        _, headers, body = await client.response()
        assert headers[b"connection"] == b"close"
        assert body == b"no"
        assert await client.read_to_eof() == b""


# -- disconnects -----------------------------------------------------------------------------------


async def test_a_client_that_leaves_mid_response_is_reported_as_http_disconnect() -> None:
    seen: list[str] = []
    left = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        seen.append((await receive())["type"])
        for _ in range(3):  # sends after the disconnect do not raise
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        left.set()

    async with serving(app) as (port, _):
        async with connect(port) as client:
            await client.stream.send_all(post("/a", b"{}"))
            await client.read_until(b"first\r\n")
        with trio.fail_after(WAIT):
            await left.wait()
    assert seen == ["http.disconnect"]


async def test_receive_after_a_complete_response_says_disconnect() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await read_body(receive)
                seen.append((await receive())["type"])

            nursery.start_soon(watch)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/") + get("/"))
        assert (await client.response())[2] == b"ok"
        assert (await client.response())[2] == b"ok"  # the pipelined request was kept
    assert seen == ["http.disconnect", "http.disconnect"]


# -- handed to hypercorn ---------------------------------------------------------------------------


async def test_a_chunked_upload_is_served_by_hypercorn_on_the_same_connection() -> None:
    app = Echo()
    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(post("/plain", b"one"))
        assert (await client.response())[2] == b"one"
        await client.stream.send_all(
            b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\ntwo\r\n0\r\n\r\n" + post("/after", b"three")
        )
        assert (await client.response())[2] == b"two"
        assert (await client.response())[2] == b"three"
    assert [s["path"] for s in app.scopes] == ["/plain", "/chunked", "/after"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # no Host
        (b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", b"400"),
        # over the front door's head limit: hypercorn's h11 decides (a whole head: it serves it)
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"200"),
    ],
)
async def test_unusual_requests_get_hypercorns_answer(request_bytes: bytes, status: bytes) -> None:
    async with serving(Echo()) as (port, _), connect(port) as client:
        await client.stream.send_all(request_bytes)
        try:
            line = await client.read_until(b"\r\n")
        except EOFError:
            line = b"(closed)"
        assert line.startswith(b"HTTP/1.1 " + status), line


async def test_http_1_0_is_answered_by_hypercorn() -> None:
    async with serving(Echo()) as (port, _), connect(port) as client:
        await client.stream.send_all(b"POST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        answer = await client.read_to_eof()
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"hi")


async def test_a_websocket_is_handed_to_hypercorn() -> None:
    async with serving(Echo()) as (port, _):
        with trio.fail_after(WAIT):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "echo hi"


# -- shutdown --------------------------------------------------------------------------------------


async def test_shutdown_closes_idle_connections_and_lets_a_response_in_flight_finish() -> None:
    release = trio.Event()
    started = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            started.set()
            await release.wait()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]}
        )
        await send({"type": "http.response.body", "body": b"done"})

    async with serving(app) as (port, stop):
        async with connect(port) as idle, connect(port) as busy:
            await idle.stream.send_all(get("/quick"))
            assert (await idle.response())[2] == b"done"
            await busy.stream.send_all(get("/slow"))
            with trio.fail_after(WAIT):
                await started.wait()
            stop.set()
            assert await idle.read_to_eof() == b""  # the idle one closes at once
            release.set()
            _, headers, body = await busy.response()
            assert body == b"done"
            assert headers[b"connection"] == b"close"
            assert await busy.read_to_eof() == b""


async def test_a_length_response_the_app_abandons_still_shows_its_head_then_closes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # the upstream broke off before the first body byte: the app returns

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/"))
        answer = await client.read_to_eof()
        # a response cut short, not a connection closed with no answer (clients retry those)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\n")


async def test_a_head_trickled_byte_by_byte_gets_one_timeout_not_one_per_byte() -> None:
    async with serving(Echo(), head_timeout=0.5) as (port, _), connect(port) as client:
        request = get("/") + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
        closed = False
        with trio.fail_after(WAIT):
            for byte in request[:-4]:
                try:
                    await client.stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    closed = True
                    break
                with trio.move_on_after(0.05):
                    if await client.stream.receive_some(100) == b"":
                        closed = True
                        break
        assert closed  # within about 0.5 s of the first byte, long before the head was done


async def test_a_head_with_bare_lf_line_endings_is_answered_by_hypercorn() -> None:
    async with serving(Echo()) as (port, _), connect(port) as client:
        await client.stream.send_all(b"GET / HTTP/1.1\nHost: t\n\n")
        line = await client.read_until(b"\r\n")
        assert line.startswith(b"HTTP/1.1 ")


async def test_a_client_that_sent_its_request_and_left_is_reported_as_disconnect() -> None:
    seen: list[str] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        seen.append((await receive())["type"])
        seen.append(str(scope["extensions"][EDGE_EXTENSION].watch.disconnected))
        done.set()

    async with serving(app) as (port, _):
        async with connect(port) as client:
            await client.stream.send_all(post("/a", b"{}"))
        with trio.fail_after(WAIT):
            await done.wait()
    assert seen == ["http.disconnect", "True"]


class FailingListener(socket.socket):
    """A listening socket on 127.0.0.1 whose accept() raises ``error`` ``failures`` times, then
    works; ``calls`` holds the trio time of every accept()."""

    def __init__(self, error: OSError, failures: int) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.error, self.failures = error, failures
        self.calls: list[float] = []
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.setblocking(False)
        self.port: int = self.getsockname()[1]

    def accept(self) -> tuple[socket.socket, object]:
        self.calls.append(trio.current_time())
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().accept()


async def test_an_accept_error_of_one_connection_does_not_stop_the_server() -> None:
    # given a listener whose accept() first fails as Linux does for a connection reset in the
    # backlog (ECONNRESET), then works
    listener = FailingListener(ConnectionResetError(errno.ECONNRESET, "reset in the backlog"), 1)
    port = listener.port
    door = server.FrontDoor(Echo(), hypercorn_config(ServerConfig(), 5.0), ServerConfig())
    with listener:
        async with trio.open_nursery() as connections:
            connections.start_soon(server._accept, door, listener, connections)
            # when a client connects, then it is served all the same
            async with connect(port) as client:
                await client.stream.send_all(post("/a", b"still here"))
                assert (await client.response())[2] == b"still here"
            assert listener.failures == 0
            connections.cancel_scope.cancel()


async def test_a_bodiless_answer_keeps_a_content_length_it_need_not_parse() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # an upstream's answer to HEAD, its length list passed on as it came
        headers = [(b"content-length", b"5, 5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async with serving(app) as (port, _), connect(port) as client:
        await client.stream.send_all(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n" + get("/y"))
        assert b"content-length: 5, 5" in await client.read_until(b"\r\n\r\n")
        # a body answer with a length we cannot frame is an app error: 500, never a silent close
        status, _, _ = await client.response()
        assert status == b"HTTP/1.1 500 Internal Server Error"
