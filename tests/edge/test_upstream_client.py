"""The lean forwarding client (edge/upstream_client.py) against raw servers on 127.0.0.1:0.

Each server is a small script of what to answer on a connection, so the tests control exactly when
the upstream closes, what framing it uses and how many connections the client opened.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import attrs
import pytest
import trio

from llama_swap_trio.edge.upstream_client import (
    BrokenResponse,
    ClosedBeforeResponse,
    ConnectFailed,
    UpstreamClient,
    UpstreamResponse,
    _Connection,
)
from tests.http.forward_support import closed_port

Handler = Callable[["Conn"], Awaitable[None]]


@attrs.define
class Conn:
    """The server side of one connection, with a buffer for reading requests."""

    stream: trio.SocketStream
    buf: bytes = b""

    async def read_request(self) -> bytes | None:
        """One request (head and content-length body), or None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self.buf += await self.stream.receive_some(65536)
        body, self.buf = self.buf[:length], self.buf[length:]
        return head + b"\r\n\r\n" + body


@attrs.define
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = attrs.field(factory=list)
    closed: trio.Event = attrs.field(factory=trio.Event)


async def start(nursery: trio.Nursery, script: Callable[[Server, Conn], Awaitable[None]]) -> Server:
    server = Server(0)

    async def handler(stream: trio.SocketStream) -> None:
        server.connections += 1
        try:
            await script(server, Conn(stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()
            server.closed.set()

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


def keep_alive(answer: bytes) -> Callable[[Server, Conn], Awaitable[None]]:
    """Answer every request on the connection with ``answer``, until the client closes."""

    async def script(server: Server, conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            server.requests.append(request)
            await conn.stream.send_all(answer)

    return script


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
    b"7\r\ndata: 1\r\n7\r\ndata: 2\r\n0\r\n\r\n"
)


async def read_all(response: UpstreamResponse) -> bytes:
    out = b""
    while (chunk := await response.next_chunk()) is not None:
        out += chunk
    response.close()
    return out


_open_clients: list[UpstreamClient] = []


@pytest.fixture
async def clients() -> AsyncIterator[None]:
    """Close every client the test made (its pooled sockets would warn when garbage collected).

    Requested by name: pytest-trio does not run autouse async fixtures.
    """
    yield
    while _open_clients:
        _open_clients.pop().close()


def client_for(server: Server | str, **kwargs: float) -> UpstreamClient:
    url = server if isinstance(server, str) else f"http://127.0.0.1:{server.port}"
    client = UpstreamClient(url, connect_timeout=5, **kwargs)
    _open_clients.append(client)
    return client


async def test_sequential_requests_reuse_one_keep_alive_connection(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a keep-alive server
    server = await start(nursery, keep_alive(OK))
    client = client_for(server)
    # when three requests are made one after the other
    with trio.fail_after(5):
        for _ in range(3):
            response = await client.request("GET", "/x", [], b"")
            assert await read_all(response) == b"hello"
    # then they all went over one connection, which is back in the pool
    assert server.connections == 1
    assert client.idle_count == 1


async def test_content_length_and_chunked_bodies_arrive_exactly(
    nursery: trio.Nursery, clients: None
) -> None:
    # given one server answering with content-length and one with chunked framing
    plain = await start(nursery, keep_alive(OK))
    chunked = await start(nursery, keep_alive(CHUNKED))
    with trio.fail_after(5):
        # when reading both
        a = await client_for(plain).request("GET", "/", [], b"")
        b = await client_for(chunked).request("GET", "/", [], b"")
        # then the bodies are the payload bytes, without framing
        assert (a.status_code, await read_all(a)) == (200, b"hello")
        assert b.header(b"content-type") == b"text/event-stream"
        assert await read_all(b) == b"data: 1data: 2"


async def test_request_carries_host_and_only_the_given_headers(
    nursery: trio.Nursery, clients: None
) -> None:
    server = await start(nursery, keep_alive(OK))
    client = client_for(f"http://127.0.0.1:{server.port}/prefix/")
    with trio.fail_after(5):
        response = await client.request(
            "POST", "/v1/x?a=1", [(b"content-length", b"2"), (b"x-k", b"v")], b"{}"
        )
        await read_all(response)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/v1/x?a=1 HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [f"host: 127.0.0.1:{server.port}".encode(), b"content-length: 2", b"x-k: v"]
    )
    assert body == b"{}"


async def test_idle_connection_closed_by_the_server_is_not_reused(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a server that closes each connection after one answer (a keep-alive timeout)
    async def one_answer(server: Server, conn: Conn) -> None:
        await conn.read_request()
        await conn.stream.send_all(OK)

    server = await start(nursery, one_answer)
    client = client_for(server)
    with trio.fail_after(5):
        await read_all(await client.request("GET", "/", [], b""))
        await server.closed.wait()
        # when the next request is made
        response = await client.request("GET", "/", [], b"")
        # then it went over a fresh connection and succeeded
        assert await read_all(response) == b"hello"
    assert server.connections == 2


async def test_a_pooled_connection_closed_before_any_answer_is_reported_as_retryable(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a server that answers one request, then reads the next and closes without a byte
    # (the stale keep-alive race)
    async def answer_once(server: Server, conn: Conn) -> None:
        await conn.read_request()
        await conn.stream.send_all(OK)
        await conn.read_request()

    server = await start(nursery, answer_once)
    client = client_for(server)
    await read_all(await client.request("GET", "/", [], b""))
    with trio.fail_after(5), pytest.raises(ClosedBeforeResponse):
        await client.request("POST", "/", [(b"content-length", b"2")], b"{}")
    assert client.idle_count == 0


async def test_a_new_connection_closed_before_any_answer_is_a_broken_response(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a server that reads the request and closes without a byte: it may have acted on it
    async def hang_up(server: Server, conn: Conn) -> None:
        await conn.read_request()

    server = await start(nursery, hang_up)
    client = client_for(server)
    with trio.fail_after(5), pytest.raises(BrokenResponse):
        await client.request("POST", "/", [(b"content-length", b"2")], b"{}")
    assert client.idle_count == 0


async def test_upstream_closing_mid_body_raises_and_drops_the_connection(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a server that promises 100 bytes and sends 5
    async def short(server: Server, conn: Conn) -> None:
        await conn.read_request()
        await conn.stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")

    server = await start(nursery, short)
    client = client_for(server)
    with trio.fail_after(5):
        response = await client.request("GET", "/", [], b"")
        assert await response.next_chunk() == b"hello"
        # when reading on, then the break is reported and nothing is pooled
        with pytest.raises(BrokenResponse):
            await response.next_chunk()
    assert client.idle_count == 0


async def test_response_closed_before_its_end_is_not_pooled(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a chunked response of which only the head was read
    server = await start(nursery, keep_alive(CHUNKED))
    client = client_for(server)
    with trio.fail_after(5):
        response = await client.request("GET", "/", [], b"")
        # when it is closed early
        response.close()
        # then its connection was closed, not pooled, and the server saw the close
        await server.closed.wait()
    assert client.idle_count == 0


async def test_cancel_while_waiting_for_the_head_closes_the_connection(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a server that never answers
    async def silent(server: Server, conn: Conn) -> None:
        await conn.read_request()
        await conn.stream.receive_some(1)  # returns at EOF: the client closed

    server = await start(nursery, silent)
    client = client_for(server)
    # when the wait for the head is cancelled
    with trio.move_on_after(0.2) as scope:
        await client.request("GET", "/", [], b"")
    assert scope.cancelled_caught
    # then the server sees the connection close and nothing is left in the pool
    with trio.fail_after(5):
        await server.closed.wait()
    assert client.idle_count == 0


async def test_cancel_mid_body_closes_the_connection_and_the_next_request_works(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a server whose first answer stalls mid-body and later ones are complete
    async def script(server: Server, conn: Conn) -> None:
        await conn.read_request()
        if server.connections == 1:
            await conn.stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
            await conn.stream.receive_some(1)
            return
        await conn.stream.send_all(OK)

    server = await start(nursery, script)
    client = client_for(server)
    response = await client.request("GET", "/", [], b"")
    assert await response.next_chunk() == b"hel"
    # when the body read is cancelled
    with trio.move_on_after(0.2):
        await response.next_chunk()
    # then the connection was dropped, and a new request gets a fresh one
    assert client.idle_count == 0
    with trio.fail_after(5):
        assert await read_all(await client.request("GET", "/", [], b"")) == b"hello"
    assert server.connections == 2


async def test_cancel_before_connecting_leaves_nothing_behind(
    nursery: trio.Nursery, clients: None
) -> None:
    server = await start(nursery, keep_alive(OK))
    client = client_for(server)
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.request("GET", "/", [], b"")
    assert client.idle_count == 0
    with trio.fail_after(5):
        assert await read_all(await client.request("GET", "/", [], b"")) == b"hello"


async def test_expired_idle_connection_is_replaced(nursery: trio.Nursery, clients: None) -> None:
    server = await start(nursery, keep_alive(OK))
    client = client_for(server, keepalive_expiry=0.0)
    with trio.fail_after(5):
        await read_all(await client.request("GET", "/", [], b""))
        await trio.sleep(0.01)  # past the (zero) expiry: the point of the test, not a wait
        await read_all(await client.request("GET", "/", [], b""))
    assert server.connections == 2


async def test_head_response_without_body_returns_the_connection(
    nursery: trio.Nursery, clients: None
) -> None:
    server = await start(nursery, keep_alive(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n"))
    client = client_for(server)
    with trio.fail_after(5):
        assert await read_all(await client.request("HEAD", "/", [], b"")) == b""
    assert client.idle_count == 1


async def test_connection_refused_raises_connect_failed(clients: None) -> None:
    client = client_for(f"http://127.0.0.1:{closed_port()}")
    with trio.fail_after(5), pytest.raises(ConnectFailed):
        await client.request("GET", "/", [], b"")


async def test_large_request_body_is_sent_whole(nursery: trio.Nursery, clients: None) -> None:
    server = await start(nursery, keep_alive(OK))
    client = client_for(server)
    body = bytes(range(256)) * 4096  # 1 MiB, over the single-write size
    with trio.fail_after(10):
        response = await client.request(
            "POST", "/", [(b"content-length", str(len(body)).encode())], body
        )
        await read_all(response)
    assert server.requests[0].endswith(body)


async def test_small_answer_comes_whole_with_its_end(nursery: trio.Nursery, clients: None) -> None:
    # given a keep-alive server with a small content-length answer
    server = await start(nursery, keep_alive(OK))
    client = client_for(server)
    with trio.fail_after(5):
        response = await client.request("GET", "/", [], b"")
        # when the first chunk is read
        chunk = await response.next_chunk()
    # then it is the whole body, known to be the last, and the connection is already pooled
    assert chunk == b"hello"
    assert response.ended
    assert client.idle_count == 1
    assert await response.next_chunk() is None


async def test_events_that_arrived_together_are_handed_out_as_one_chunk(
    nursery: trio.Nursery, clients: None
) -> None:
    # given a chunked stream whose first three events arrive in one write, the end later
    go_on = trio.Event()

    async def bursty(server: Server, conn: Conn) -> None:
        await conn.read_request()
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        events = b"".join(b"3\r\ne%d\n\r\n" % i for i in range(3))
        await conn.stream.send_all(head + events)
        await go_on.wait()
        await conn.stream.send_all(b"3\r\nend\r\n0\r\n\r\n")
        await conn.stream.receive_some(1)

    server = await start(nursery, bursty)
    client = client_for(server)
    with trio.fail_after(5):
        response = await client.request("GET", "/", [], b"")
        # when reading: the buffered events come as one chunk, the stream not yet ended
        first = await response.next_chunk()
        assert first == b"e0\ne1\ne2\n"
        assert not response.ended
        go_on.set()
        # then the rest follows with its end
        assert await response.next_chunk() == b"end"
        assert response.ended
        assert await response.next_chunk() is None
    assert client.idle_count == 1


async def test_bad_chunk_framing_that_came_with_the_head_is_a_broken_response(
    nursery: trio.Nursery, clients: None
) -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
    server = await start(nursery, keep_alive(answer))
    with pytest.raises(BrokenResponse):
        await client_for(server).request("GET", "/", [], b"")


def test_idle_connections_on_descriptors_above_1024_are_checked() -> None:
    # select() cannot take descriptors >= 1024; a busy daemon has them
    a, b = socket.socketpair()
    high = socket.socket(fileno=os.dup2(a.fileno(), 1500))
    a.close()
    conn = _Connection(high, None)
    try:
        assert conn.looks_reusable(0.0, 10.0)
        b.close()  # the server side closes: EOF makes it readable
        assert not conn.looks_reusable(0.0, 10.0)
    finally:
        high.close()
