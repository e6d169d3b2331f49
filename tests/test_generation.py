"""Generations on trio's autojump clock: drain on retirement, feed streams, the stopped chain.

The generations start no process (no request reaches a model), so no real I/O happens; the app is
replaced by a stand-in whose requests last as long as a test wants.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from llama_swap_trio.config import load_config_text
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.generation import DRAIN_SECONDS, Dispatcher, Generation, Shared
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.logbuffer import LogBuffer

CONFIG = 'start_port = 45000\n[models.a]\ncmd = "true --port ${PORT}"\n'


class StandInApp:
    """Requests that end when ``release`` is set; records how each ended."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.ended: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.ended.append(f"{scope['path']} cancelled")
            raise
        self.ended.append(f"{scope['path']} done")


async def start_generation(
    nursery: trio.Nursery, number: int = 1, previous: Generation | None = None
) -> tuple[Generation, StandInApp]:
    shared = Shared(EventBus(), None, LogBuffer(), LogBuffer(), {}, lambda: False)
    generation = Generation(number, load_config_text(CONFIG), shared, previous=previous)
    await nursery.start(generation.run)
    app = StandInApp()
    generation._app = app  # the stand-in replaces the real app
    return generation, app


def request(path: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "GET"}


async def noop_receive() -> dict[str, Any]:
    return {}


async def noop_send(message: Any) -> None:
    pass


async def test_retiring_waits_for_requests_in_flight_before_stopping(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # given a request in flight
    generation, app = await start_generation(nursery)
    nursery.start_soon(generation.handle, request("/v1/chat/completions"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()

    # when the generation retires
    generation.retire()
    await trio.sleep(DRAIN_SECONDS / 2)
    # then it has not stopped while the request runs
    assert not generation.stopped.is_set()

    # and it stops as soon as the request is done
    app.release.set()
    await generation.stopped.wait()
    assert app.ended == ["/v1/chat/completions done"]
    assert trio.current_time() < DRAIN_SECONDS


async def test_a_request_that_outlasts_the_drain_bound_does_not_hold_the_stop_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # given a request that never ends by itself (a real one ends when its upstream stops)
    generation, app = await start_generation(nursery)
    nursery.start_soon(generation.handle, request("/v1/chat/completions"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()
    started = trio.current_time()

    # when the generation retires, it stops right after the drain bound
    generation.retire()
    await generation.stopped.wait()

    assert DRAIN_SECONDS <= trio.current_time() - started < DRAIN_SECONDS + 1
    app.release.set()


async def test_feed_and_log_streams_do_not_hold_a_retirement_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    generation, app = await start_generation(nursery)
    for path in ("/api/events", "/logs/stream", "/logs/stream/a"):
        nursery.start_soon(generation.handle, request(path), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()

    generation.retire()
    await generation.stopped.wait()

    # retired at once, and the streams keep going (they read only what outlives a generation)
    assert trio.current_time() < 1
    assert app.ended == []
    app.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert len(app.ended) == 3


async def test_feed_streams_are_cut_when_the_api_keys_changed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    generation, app = await start_generation(nursery)
    nursery.start_soon(generation.handle, request("/api/events"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()

    generation.retire(keys_changed=True)
    await generation.stopped.wait()

    assert app.ended == ["/api/events cancelled"]


async def test_a_generation_counts_as_stopped_only_once_every_earlier_one_has(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # given generation 1 retiring slowly (a request in flight) and generation 2 after it
    first, first_app = await start_generation(nursery, 1)
    nursery.start_soon(first.handle, request("/v1/completions"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()
    second, _ = await start_generation(nursery, 2, previous=first)
    first.retire()

    # when generation 2 is retired at once (a quick second reload)
    second.retire()
    await trio.testing.wait_all_tasks_blocked()

    # then it is not "stopped" while generation 1 still is not
    assert not first.stopped.is_set()
    assert not second.stopped.is_set()
    first_app.release.set()
    await second.stopped.wait()
    assert first.stopped.is_set()


async def test_the_dispatcher_sends_each_new_request_to_the_current_generation(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    first, first_app = await start_generation(nursery, 1)
    second, second_app = await start_generation(nursery, 2, previous=first)
    dispatcher = Dispatcher()
    dispatcher.current = first
    nursery.start_soon(dispatcher, request("/old"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()

    dispatcher.current = second
    nursery.start_soon(dispatcher, request("/new"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()
    first_app.release.set()
    second_app.release.set()
    await trio.testing.wait_all_tasks_blocked()

    assert first_app.ended == ["/old done"]
    assert second_app.ended == ["/new done"]
