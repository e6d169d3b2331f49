"""``max_connections`` (SPEC 6.1) on real sockets: beyond it new clients wait in the backlog,
idle keep-alive connections are closed first to make room; the derived default keeps a quarter
of the fd limit (at least 64) free; an accept() that fails for lack of descriptors pauses and
logs once instead of spinning."""

from __future__ import annotations

import errno
import logging

import trio

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.edge import server
from llama_swap_trio.edge.handoff import hypercorn_config
from llama_swap_trio.edge.limits import derived_max_connections
from tests.edge.test_server import Echo, FailingListener, connect, get, serving
from tests.edge.test_timeouts import closed_after

WAIT = 10


def test_the_derived_limit_keeps_a_quarter_of_the_descriptors_and_at_least_64() -> None:
    assert derived_max_connections(1024, in_use=30) == 1024 - 256 - 30
    assert derived_max_connections(256, in_use=30) == 256 - 64 - 30
    assert derived_max_connections(100, in_use=60) == 1  # never 0: the daemon must serve


async def test_an_idle_keep_alive_connection_is_closed_to_make_room_for_a_new_client() -> None:
    async with serving(Echo(), max_connections=2) as (port, _):
        async with connect(port) as idle, connect(port) as busy:
            # given two connections: one idle after a request, one in the middle of a head
            await idle.stream.send_all(get("/idle"))
            assert (await idle.response())[0] == b"HTTP/1.1 200 OK"
            await busy.stream.send_all(b"GET /busy HTTP/1.1\r\n")
            # when a third client comes, then the idle one is closed and the new one served
            async with connect(port) as new:
                await new.stream.send_all(get("/new"))
                assert (await new.response())[0] == b"HTTP/1.1 200 OK"
            assert await closed_after(idle) < WAIT
            # and the busy one was left alone
            await busy.stream.send_all(b"Host: t\r\n\r\n")
            assert (await busy.response())[0] == b"HTTP/1.1 200 OK"


async def test_beyond_the_limit_a_new_client_waits_until_a_connection_ends() -> None:
    async with serving(Echo(), max_connections=1) as (port, _):
        async with connect(port) as first:
            await first.stream.send_all(b"GET /first HTTP/1.1\r\n")  # holds the only slot
            async with connect(port) as second:
                await second.stream.send_all(get("/second"))
                with trio.move_on_after(0.3):
                    await second.response()
                    raise AssertionError("served beyond max_connections")
                # when the first connection ends, then the second is served
                await first.stream.aclose()
                assert (await second.response())[0] == b"HTTP/1.1 200 OK"


async def test_accept_running_out_of_descriptors_pauses_and_logs_once(
    records: list[logging.LogRecord],
) -> None:
    # given a listener whose accept() fails with EMFILE four times, then works
    listener = FailingListener(OSError(errno.EMFILE, "Too many open files"), 4)
    port, calls = listener.port, listener.calls
    door = server.FrontDoor(Echo(), hypercorn_config(ServerConfig(), 5.0), ServerConfig())
    with listener:
        async with trio.open_nursery() as connections:
            connections.start_soon(server._accept, door, listener, connections)
            # when a client connects, then it is served once descriptors are back
            async with connect(port) as client:
                await client.stream.send_all(get("/"))
                assert (await client.response())[0] == b"HTTP/1.1 200 OK"
            connections.cancel_scope.cancel()
    # the retries paused (0.1, 0.2, 0.4, 0.8 s), not ten a second or a spin
    assert calls[4] - calls[0] >= 1.4
    lines = [r.getMessage() for r in records if r.levelno >= logging.INFO]
    assert len([line for line in lines if "cannot accept" in line]) == 1
    assert len([line for line in lines if "accepting connections again" in line]) == 1
