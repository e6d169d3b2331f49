"""Odd upstream answers, relayed to a client (SPEC 6.1): statuses, bodiless lengths, header names.

A scripted upstream writes exact bytes; the proxy app forwards on both servers (the front door and
hypercorn); a raw client reads exact bytes back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import attrs
import pytest
import trio

from llama_swap_trio.http.pool import ClientPool

from .forward_support import ProxyState, grant_for, proxy_app, start_front_door, start_server

WAIT = 10


@attrs.define
class Scripted:
    """An upstream that answers every request with ``answer`` (and closes after it)."""

    answer: bytes = b""
    url: str = ""

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            received = b""
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some()
                if not data:
                    return
                received += data
            await stream.send_all(self.answer)


@attrs.define
class Setup:
    upstream: Scripted
    proxy_url: str


@pytest.fixture(params=["front_door", "hypercorn"])
async def setup(nursery: trio.Nursery, request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    upstream = Scripted()
    listeners = await nursery.start(partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1"))
    upstream.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    pool = ClientPool()
    state = ProxyState(grant=grant_for(upstream.url), pool=pool)
    start = start_front_door if request.param == "front_door" else start_server
    yield Setup(upstream, await start(nursery, proxy_app(state)))
    await pool.aclose()


async def exchange(url: str, method: str = "GET") -> tuple[bytes, bytes]:
    """(response head, what followed it until the proxy closed) for one raw request."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"{method} /x HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n".encode()
        )
        received = b""
        with trio.fail_after(WAIT):
            while data := await stream.receive_some():
                received += data
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def lengths(head: bytes) -> list[bytes]:
    return [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")[1:]
        if line.split(b":", 1)[0].lower() == b"content-length"
    ]


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999"])
async def test_a_status_outside_100_to_599_is_a_502(setup: Setup, status: bytes) -> None:
    setup.upstream.answer = b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nhi"
    head, body = await exchange(setup.proxy_url)
    assert head.startswith(b"HTTP/1.1 502 ")
    assert b"upstream_error" in body
    assert b"outside 100-599" in body


@pytest.mark.parametrize(
    ("method", "status", "upstream_length", "expected"),
    [
        ("GET", b"204 No Content", b"10", []),
        ("GET", b"204 No Content", b"abc", []),
        ("GET", b"304 Not Modified", b"12", [b"12"]),
        ("GET", b"304 Not Modified", b"5, 6", []),
        ("HEAD", b"200 OK", b"1234", [b"1234"]),
        ("HEAD", b"200 OK", b"-1", []),
    ],
)
async def test_bodiless_answers_carry_no_disagreeing_length(
    setup: Setup, method: str, status: bytes, upstream_length: bytes, expected: list[bytes]
) -> None:
    setup.upstream.answer = (
        b"HTTP/1.1 " + status + b"\r\nContent-Length: " + upstream_length + b"\r\nX-A: 1\r\n\r\n"
    )
    head, rest = await exchange(setup.proxy_url, method)
    assert head.split(b" ")[1] == status.split(b" ")[0]
    assert lengths(head) == expected
    if method != "HEAD":  # h11 frames a HEAD answer's would-be body as chunked: harmless
        assert b"transfer-encoding" not in head.lower()
    assert rest == b""


async def test_response_header_names_keep_the_upstreams_spelling(setup: Setup) -> None:
    setup.upstream.answer = (
        b"HTTP/1.1 200 OK\r\nX-Request-ID: abc\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    )
    head, body = await exchange(setup.proxy_url)
    lines = head.split(b"\r\n")[1:]
    assert b"X-Request-ID: abc" in lines
    assert b"Content-Type: text/plain" in lines
    assert body == b"hi"
