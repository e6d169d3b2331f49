"""``[server]`` timeouts (SPEC 6.1) on real sockets: a head must arrive whole within
``head_timeout``, a request body may pause at most ``body_timeout``, an idle keep-alive connection
closes after ``keep_alive_timeout``; on the front door and on connections handed to hypercorn.
Closing on a timeout is routine: nothing is logged above debug (no traceback)."""

from __future__ import annotations

import logging

import trio
from trio_websocket import open_websocket_url

from llama_swap_trio.http.asgi import Receive, Scope, Send
from tests.edge.test_server import Client, Echo, connect, get, serving

SHORT = 0.4
WAIT = 10


def loud(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in records if r.levelno > logging.DEBUG]


async def closed_after(client: Client) -> float:
    """Seconds until the server closes ``client`` (bytes it sends before that are kept)."""
    began = trio.current_time()
    await client.read_to_eof()
    return trio.current_time() - began


class Patient:
    """Reads the whole body (or sees the disconnect), answers 200 with what it got."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            self.seen.append(message["type"])
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# -- the front door --------------------------------------------------------------------------------


async def test_a_head_that_stops_half_way_is_closed_after_head_timeout(
    records: list[logging.LogRecord],
) -> None:
    async with serving(Echo(), head_timeout=SHORT) as (port, _), connect(port) as client:
        await client.stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        took = await closed_after(client)
    assert SHORT * 0.8 <= took < WAIT
    assert loud(records) == []


async def test_a_connection_that_never_sends_a_head_is_closed_after_head_timeout() -> None:
    async with serving(Echo(), head_timeout=SHORT) as (port, _), connect(port) as client:
        assert SHORT * 0.8 <= await closed_after(client) < WAIT


async def test_an_idle_keep_alive_connection_closes_after_keep_alive_timeout_quietly(
    records: list[logging.LogRecord],
) -> None:
    # given a connection that was served a request and then sends nothing
    async with serving(Echo(), keep_alive_timeout=SHORT) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/"))
        status, _, _ = await client.response()
        assert status == b"HTTP/1.1 200 OK"
        # then it is closed after the keep-alive timeout, with no traceback in the log
        took = await closed_after(client)
    assert SHORT * 0.8 <= took < WAIT
    assert loud(records) == []


async def test_each_idle_spell_gets_the_whole_keep_alive_timeout() -> None:
    # given a connection served a request, idle for half the timeout, then served another
    async with serving(Echo(), keep_alive_timeout=SHORT) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/"))
        assert (await client.response())[0] == b"HTTP/1.1 200 OK"
        await trio.sleep(SHORT / 2)  # the scenario: a pause shorter than the timeout
        await client.stream.send_all(get("/"))
        assert (await client.response())[0] == b"HTTP/1.1 200 OK"
        # then its second idle spell is timed from its own start, not from the first one's
        took = await closed_after(client)
    assert SHORT * 0.8 <= took < WAIT


async def test_the_next_head_has_head_timeout_from_its_first_byte_not_keep_alive() -> None:
    settings = {"keep_alive_timeout": 30.0, "head_timeout": SHORT}
    async with serving(Echo(), **settings) as (port, _), connect(port) as client:
        await client.stream.send_all(get("/"))
        await client.response()
        await client.stream.send_all(b"GET /next HTTP/1.1\r\n")  # and nothing more
        assert await closed_after(client) < WAIT


async def test_a_body_that_stalls_is_closed_after_body_timeout_and_the_app_sees_a_disconnect(
    records: list[logging.LogRecord],
) -> None:
    app = Patient()
    async with serving(app, body_timeout=SHORT) as (port, _), connect(port) as client:
        # the case: Content-Length 100, then 10 bytes and silence
        await client.stream.send_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
        )
        took = await closed_after(client)
        assert client.buf == b""  # closed unanswered
    assert SHORT * 0.8 <= took < WAIT
    assert "http.disconnect" in app.seen
    assert loud(records) == []


async def test_a_slow_body_that_keeps_coming_is_not_cut() -> None:
    async with serving(Patient(), body_timeout=SHORT) as (port, _), connect(port) as client:
        await client.stream.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n")
        for _ in range(4):  # 4 pauses of half the timeout: longer than it in total
            await trio.sleep(SHORT / 2)
            await client.stream.send_all(b"ab")
        status, _, body = await client.response()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"abababab")


# -- connections handed to hypercorn ---------------------------------------------------------------


CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_a_handed_chunked_upload_that_stalls_is_closed_after_body_timeout(
    records: list[logging.LogRecord],
) -> None:
    app = Patient()
    async with serving(app, body_timeout=SHORT) as (port, _), connect(port) as client:
        await client.stream.send_all(CHUNKED_HEAD + b"5\r\nhello\r\n")  # and no more chunks
        took = await closed_after(client)
    assert SHORT * 0.8 <= took < WAIT
    assert loud(records) == []


async def test_a_handed_connection_closes_when_idle_and_its_next_head_has_head_timeout() -> None:
    # keep-alive on a handed connection is hypercorn's idle timer
    async with serving(Patient(), keep_alive_timeout=SHORT) as (port, _), connect(port) as client:
        await client.stream.send_all(CHUNKED_HEAD + b"2\r\nhi\r\n0\r\n\r\n")
        assert (await client.response())[2] == b"hi"
        assert SHORT * 0.8 <= await closed_after(client) < WAIT
    # a head begun on it must come whole within head_timeout
    settings = {"keep_alive_timeout": 30.0, "head_timeout": SHORT}
    async with serving(Patient(), **settings) as (port, _), connect(port) as client:
        await client.stream.send_all(CHUNKED_HEAD + b"2\r\nhi\r\n0\r\n\r\n")
        assert (await client.response())[2] == b"hi"
        await client.stream.send_all(b"GET /next HTTP/1.1\r\n")
        assert await closed_after(client) < WAIT


async def test_a_quiet_websocket_is_not_closed_by_the_request_timeouts() -> None:
    settings = {"head_timeout": SHORT, "body_timeout": SHORT}
    async with serving(Echo(), **settings) as (port, _):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await trio.sleep(SHORT * 3)  # quiet for longer than both timeouts
            await ws.send_message("still here")
            with trio.fail_after(WAIT):
                assert await ws.get_message() == "echo still here"
