"""The runtime across reloads and the generations over it, on trio's autojump clock.

No request reaches a model, so no process starts; apps are replaced by a stand-in whose requests
last as long as a test wants.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from llama_swap_trio.config import load_config_text
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.generation import Dispatcher, Generation, Runtime, Shared
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.reload_plan import ReloadPlan

CONFIG = 'start_port = 45000\n[models.a]\ncmd = "true --port ${PORT}"\n'
THREE = (
    CONFIG + '[models.b]\ncmd = "true --port ${PORT}"\n[models.c]\ncmd = "true --port ${PORT}"\n'
)


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


def make_shared() -> Shared:
    return Shared(EventBus(), None, LogBuffer(), LogBuffer(), {}, lambda: False)


async def start_runtime(nursery: trio.Nursery, text: str = CONFIG) -> tuple[Runtime, Shared]:
    shared = make_shared()
    runtime = Runtime(load_config_text(text), shared)
    await nursery.start(runtime.run)
    return runtime, shared


def generation_with_stand_in(
    number: int, runtime: Runtime, shared: Shared
) -> tuple[Generation, StandInApp]:
    generation = Generation(number, runtime.config, runtime, shared)
    app = StandInApp()
    generation.app = app  # the stand-in replaces the real app
    return generation, app


def request(path: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "GET"}


async def noop_receive() -> dict[str, Any]:
    return {}


async def noop_send(message: Any) -> None:
    pass


async def test_apply_keeps_restarts_adds_and_removes_upstreams(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # given a, b, c running in the runtime
    runtime, _ = await start_runtime(nursery, THREE)
    router = runtime.router
    a, b = router.upstream("a"), router.upstream("b")

    # when a reload keeps a, restarts b, removes c and adds d
    new = load_config_text(
        'start_port = 45000\n[models.a]\ncmd = "true --port ${PORT}"\nttl = 60\n'
        '[models.b]\ncmd = "false --port ${PORT}"\n[models.d]\ncmd = "true --port ${PORT}"\n'
    )
    await runtime.apply(new, ReloadPlan(("a",), ("b",), ("d",), ("c",)))
    await trio.testing.wait_all_tasks_blocked()

    # then a is the same upstream with its new settings, b a new one, c gone, d there
    assert router.upstream("a") is a
    assert a.model.ttl == 60
    assert router.upstream("b") is not b
    assert router.upstream("b").model.argv[0] == "false"
    assert [m.id for m in router.snapshot().models] == ["a", "b", "d"]
    assert runtime._gate is not None
    assert runtime._gate.is_set()


async def test_feed_and_log_streams_outlive_a_reload_unless_the_keys_changed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    runtime, shared = await start_runtime(nursery)
    kept, kept_app = generation_with_stand_in(1, runtime, shared)
    cut, cut_app = generation_with_stand_in(2, runtime, shared)
    for path in ("/api/events", "/logs/stream", "/logs/stream/a"):
        nursery.start_soon(kept.handle, request(path), noop_receive, noop_send)
    nursery.start_soon(cut.handle, request("/api/events"), noop_receive, noop_send)
    await trio.testing.wait_all_tasks_blocked()

    kept.retire()
    cut.retire(keys_changed=True)
    await trio.testing.wait_all_tasks_blocked()

    assert kept_app.ended == []
    assert cut_app.ended == ["/api/events cancelled"]
    kept_app.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert len(kept_app.ended) == 3


async def test_the_dispatcher_sends_each_new_request_to_the_current_generation(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    runtime, shared = await start_runtime(nursery)
    first, first_app = generation_with_stand_in(1, runtime, shared)
    second, second_app = generation_with_stand_in(2, runtime, shared)
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
