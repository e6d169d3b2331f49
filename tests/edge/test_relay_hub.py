"""The relay hub (edge/relay_hub.py) on socket pairs: bodies arrive whole and in order, a slow
client holds the upstream back instead of filling memory, and every way a relay ends leaves the
hub clean. (Through the daemon, every streamed e2e test goes through the hub as well.)"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from llama_swap_trio.edge import sockio
from llama_swap_trio.edge.relay_hub import (
    CLIENT_GONE,
    DONE,
    READ_SIZE,
    UPSTREAM_FAILED,
    Relay,
    RelayHub,
)
from llama_swap_trio.edge.wire import BodyReader, parse_response_head

pytestmark = pytest.mark.trio

WAIT = 10
END = b"<end>"


def frame(body: bytes, more: bool) -> bytes:
    """A visible framing: the body as is, and a marker at the end."""
    return body if more else body + END


def chunked_reader() -> BodyReader:
    return BodyReader(parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", "GET"))


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@asynccontextmanager
async def running_hub() -> AsyncIterator[RelayHub]:
    hub = RelayHub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        yield hub
        nursery.cancel_scope.cancel()


async def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    with trio.fail_after(WAIT):
        while not data.endswith(marker):
            more = await sockio.receive(sock, 1 << 20)
            if not more:
                break
            data += more
    return data


async def wait_for(condition: object) -> None:
    with trio.fail_after(WAIT):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.005)


async def test_a_body_is_relayed_whole_after_the_bytes_already_read() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()
    seen: list[bytes] = []
    with up_hub, up_test, client_hub, client_test:
        async with running_hub() as hub:
            reader = chunked_reader()
            ready = reader.feed(chunk(b"first "))
            relay = hub.start(up_hub, reader, ready, client_hub, frame, seen.append)
            for part in (b"second ", b"third"):
                await sockio.send_all(up_test, chunk(part))
            await sockio.send_all(up_test, b"0\r\n\r\n")
            assert await read_until(client_test, END) == b"first second third" + END
            with trio.fail_after(WAIT):
                await relay.finished.wait()
            assert relay.outcome == DONE
            assert b"".join(seen) == b"first second third"
            assert not hub._relays


async def test_a_client_that_does_not_read_holds_the_upstream_back() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()
    body = b"x" * (8 << 20)
    with up_hub, up_test, client_hub, client_test:
        async with running_hub() as hub, trio.open_nursery() as nursery:
            reader = BodyReader(
                parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % len(body), "GET")
            )
            relay = hub.start(up_hub, reader, [], client_hub, frame, lambda _: None)
            sent = 0

            async def upstream() -> None:
                nonlocal sent
                view = memoryview(body)
                while sent < len(body):
                    await trio.lowlevel.wait_writable(up_test)
                    try:
                        sent += up_test.send(view[sent : sent + 65536])
                    except BlockingIOError:
                        pass

            nursery.start_soon(upstream)
            # the client reads nothing: the hub pauses that relay, holding one read at most
            await wait_for(lambda: relay in hub._paused)
            await trio.sleep(0.2)
            assert len(relay._pending) <= READ_SIZE
            assert sent < len(body)  # the upstream is held back by TCP, not buffered here
            received = await read_until(client_test, END)
            assert received == body + END
            assert relay.outcome == DONE


async def test_a_client_that_leaves_ends_the_relay_and_leaves_the_hub_clean() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()
    with up_hub, up_test, client_hub:
        async with running_hub() as hub:
            relay = hub.start(up_hub, chunked_reader(), [], client_hub, frame, lambda _: None)
            client_test.close()
            with trio.fail_after(WAIT):
                while not relay.finished.is_set():
                    await sockio.send_all(up_test, chunk(b"token "))
                    await trio.sleep(0.01)
            assert relay.outcome == CLIENT_GONE
            assert not hub._relays


async def test_an_upstream_that_breaks_off_mid_body_fails_the_relay() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()
    with up_hub, client_hub, client_test:
        async with running_hub() as hub:
            relay = hub.start(up_hub, chunked_reader(), [], client_hub, frame, lambda _: None)
            await sockio.send_all(up_test, chunk(b"partial") + b"ff\r\nabc")
            up_test.close()
            with trio.fail_after(WAIT):
                await relay.finished.wait()
            assert relay.outcome == UPSTREAM_FAILED
            assert await sockio.receive(client_test, 1024) == b"partialabc"  # no end marker
            assert not hub._relays


async def test_a_relay_stopped_by_its_owner_reads_nothing_more() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()
    with up_hub, up_test, client_hub, client_test:
        async with running_hub() as hub:
            relay = hub.start(up_hub, chunked_reader(), [], client_hub, frame, lambda _: None)
            hub.stop(relay)
            assert not hub._relays
            await sockio.send_all(up_test, chunk(b"late"))
            await trio.sleep(0.1)
            assert up_hub.recv(100) == chunk(b"late")  # still in the socket: nobody read it
            assert not relay.finished.is_set()


async def test_relays_still_running_when_the_hub_stops_end_as_client_gone() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()
    relay: Relay | None = None
    with up_hub, up_test, client_hub, client_test:
        async with running_hub() as hub:
            relay = hub.start(up_hub, chunked_reader(), [], client_hub, frame, lambda _: None)
        assert relay.finished.is_set()
        assert relay.outcome == CLIENT_GONE


async def test_an_error_in_one_relay_ends_only_that_relay() -> None:
    bad_up, bad_up_test = pair()
    bad_client, bad_client_test = pair()
    up_hub, up_test = pair()
    client_hub, client_test = pair()

    def broken_frame(body: bytes, more: bool) -> bytes:
        raise RuntimeError("a bug in framing")

    sockets = (bad_up, bad_up_test, bad_client, bad_client_test, up_hub, up_test, client_hub)
    with contextlib.ExitStack() as stack:
        for sock in (*sockets, client_test):
            stack.enter_context(sock)
        async with running_hub() as hub:
            bad = hub.start(bad_up, chunked_reader(), [], bad_client, broken_frame, lambda _: None)
            good = hub.start(up_hub, chunked_reader(), [], client_hub, frame, lambda _: None)
            await sockio.send_all(bad_up_test, chunk(b"boom"))
            with trio.fail_after(WAIT):
                await bad.finished.wait()
            assert bad.outcome == UPSTREAM_FAILED
            await sockio.send_all(up_test, chunk(b"still fine") + b"0\r\n\r\n")
            assert await read_until(client_test, END) == b"still fine" + END
            assert good.outcome == DONE


async def test_an_accounting_error_leaves_the_stream_whole() -> None:
    up_hub, up_test = pair()
    client_hub, client_test = pair()

    def broken_accounting(piece: bytes) -> None:
        raise RuntimeError("a bug in accounting")

    with up_hub, up_test, client_hub, client_test:
        async with running_hub() as hub:
            relay = hub.start(up_hub, chunked_reader(), [], client_hub, frame, broken_accounting)
            await sockio.send_all(up_test, chunk(b"one ") + chunk(b"two") + b"0\r\n\r\n")
            assert await read_until(client_test, END) == b"one two" + END
            with trio.fail_after(WAIT):
                await relay.finished.wait()
            assert relay.outcome == DONE
