"""The router task with fake upstreams on trio's autojump clock: llama-swap's historic races."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.feed.bus import EventBus, Subscription
from llama_swap_trio.routing.api import Progress
from llama_swap_trio.routing.router import Router
from llama_swap_trio.upstream.api import IdleExpired, StartFailed, UpstreamEvent, UpstreamState

from .builders import group, group_config, single_group
from .fakes import FakeUpstream


@attrs.define
class Env:
    router: Router
    ups: dict[str, FakeUpstream]
    feed: Subscription
    nursery: trio.Nursery
    #: cancels the router task alone (cancelling ``nursery`` would cancel the test body too)
    router_scope: trio.CancelScope

    def events(self, kind: str) -> list[dict[str, Any]]:
        out = []
        while (event := self.feed.get_nowait()) is not None:
            out.append(dict(event))
        return [e for e in out if e["type"] == kind]

    def in_flight(self) -> dict[str, int]:
        return {m.id: m.in_flight for m in self.router.snapshot().models}


@asynccontextmanager
async def running(
    config: Config, *, start_delay: float = 1.0, stop_delay: float = 0.5
) -> AsyncIterator[Env]:
    bus = EventBus()
    feed = bus.subscribe(100_000)
    routers: list[Router] = []

    def notify(event: UpstreamEvent) -> None:
        routers[0].notify(event)

    ups = {
        m: FakeUpstream(cfg, notify, start_delay=start_delay, stop_delay=stop_delay)
        for m, cfg in config.models.items()
    }
    router = Router(config, ups, bus=bus)
    routers.append(router)
    router_scope = trio.CancelScope()

    async def run_router(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with router_scope:
            await router.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_router)
        for up in ups.values():
            nursery.start_soon(up.run)
        yield Env(router, ups, feed, nursery, router_scope)
        nursery.cancel_scope.cancel()


async def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def hold(env: Env, model: str, until: trio.Event, served: list[str] | None = None) -> None:
    """A request that keeps its grant until ``until`` is set."""
    async with env.router.serve(model):
        if served is not None:
            served.append(model)
        await until.wait()


async def refused_load(env: Env, model: str, outcome: list[ProxyError]) -> None:
    """Load ``model``, which must be refused; the error goes to ``outcome``."""
    with pytest.raises(ProxyError) as info:
        await env.router.load(model)
    outcome.append(info.value)


async def test_cold_request_loads_once_then_ready_model_takes_the_fast_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b")) as env:
        async with env.router.serve("a") as grant:
            assert grant.model.id == "a"
            assert grant.upstream is env.ups["a"]
            assert env.in_flight()["a"] == 1
        before = trio.current_time()
        async with env.router.serve("a"):
            assert trio.current_time() - before < 0.1
        assert env.ups["a"].starts == 1
        await wait_until(lambda: env.ups["a"].in_flight_reports == [1, 0, 1, 0])
        swaps = env.events("swap")
        assert swaps[0] == {"type": "swap", "phase": "start", "model": "a", "evict": []}
        assert swaps[1]["phase"] == "done"
        assert swaps[1]["ok"] is True
        assert swaps[1]["duration_ms"] == pytest.approx(1000, abs=50)


async def test_model_state_notices_are_published_on_the_feed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        await env.router.load("a")
        states = [(e["model"], e["previous"], e["state"]) for e in env.events("model_state")]
        assert states == [("a", "stopped", "starting"), ("a", "starting", "ready")]


async def test_fast_path_request_is_never_cut_by_a_swap_that_would_stop_its_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # llama-swap #667: a granted request must count as in flight before any eviction decision
    async with running(single_group("a", "b")) as env:
        await env.router.load("a")
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        env.nursery.start_soon(hold, env, "b", trio.Event(), served)
        await trio.sleep(30)
        assert env.ups["a"].state == UpstreamState.READY
        assert env.ups["b"].starts == 0
        release.set()
        await wait_until(lambda: served == ["a", "b"])
        assert env.ups["a"].stopped_with_in_flight == [0]


async def test_request_during_a_ttl_stop_waits_for_it_then_starts_the_model_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # llama-swap #946: a request that arrives while its model stops must not hang
    async with running(single_group("a"), stop_delay=5) as env:
        await env.router.load("a")
        env.router.notify(IdleExpired("a"))
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STOPPING)
        start = trio.current_time()
        async with env.router.serve("a"):
            assert env.ups["a"].state == UpstreamState.READY
        assert env.ups["a"].starts == 2
        assert trio.current_time() - start >= 5


async def test_ttl_expiry_is_ignored_while_a_request_is_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        async with env.router.serve("a"):
            env.router.notify(IdleExpired("a"))
            await trio.sleep(10)
            assert env.ups["a"].state == UpstreamState.READY
        assert env.ups["a"].stops == 0


async def test_ttl_report_declined_while_a_request_queued_is_followed_by_a_later_unload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # given a (ttl 10 s) in an exclusive group and b running beside it in a non-exclusive one
    config = group_config(group("g", "a"), group("h", "b", exclusive=False))
    models = dict(config.models)
    models["a"] = attrs.evolve(models["a"], ttl=10)
    async with running(attrs.evolve(config, models=models)) as env:
        await env.router.load("a")
        release_b = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "b", release_b, served)
        await wait_until(lambda: served == ["b"])
        # and a request for a queued behind b (a is exclusive: it must evict busy b first)
        with trio.move_on_after(15):
            async with env.router.serve("a"):
                pytest.fail("a must not be served while b is busy")
        # when a's ttl expired while that request was queued (the report was declined), and the
        # request left
        release_b.set()
        # then a is still unloaded by its ttl later
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STOPPED, timeout=30)
        assert env.ups["a"].stops == 1


async def test_client_leaving_the_queue_leaks_no_count_and_causes_no_load(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b")) as env:
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        with trio.move_on_after(5):
            async with env.router.serve("b"):
                pytest.fail("b must not be served while a is busy")
        await wait_until(lambda: env.router.snapshot().queue == ())
        release.set()
        await trio.sleep(30)
        assert env.ups["b"].starts == 0
        assert env.ups["a"].state == UpstreamState.READY
        assert env.in_flight() == {"a": 0, "b": 0}


async def test_client_leaving_during_its_load_lets_the_load_finish_for_nobody(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b"), start_delay=10) as env:
        with trio.move_on_after(2):
            await env.router.load("a")
        await wait_until(lambda: env.ups["a"].state == UpstreamState.READY)
        assert env.ups["a"].in_flight_reports == []
        assert env.in_flight() == {"a": 0, "b": 0}
        await env.router.load("b")  # nothing in flight on a: evicted at once
        assert env.ups["a"].state == UpstreamState.STOPPED


async def test_grant_racing_a_client_cancel_never_leaks_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b")) as env:
        for offset in (-0.001, 0.0, 0.0, 0.001):
            await env.router.unload()
            deadline = trio.current_time() + 1.0 + offset
            with trio.move_on_at(deadline):
                async with env.router.serve("a"):
                    await trio.sleep(5)
            await wait_until(lambda: env.in_flight()["a"] == 0)
            await trio.sleep(2)
            assert env.in_flight()["a"] == 0
        await env.router.load("b")  # a is not stuck busy
        assert env.ups["a"].state == UpstreamState.STOPPED


async def test_unload_refuses_the_requests_waiting_for_that_load(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a"), start_delay=10) as env:
        outcome: list[ProxyError] = []
        env.nursery.start_soon(refused_load, env, "a", outcome)
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STARTING)
        start = trio.current_time()
        assert await env.router.unload("a") == ["a"]
        assert trio.current_time() - start < 5  # the start was aborted, not waited for
        await wait_until(lambda: bool(outcome))
        assert outcome[0].status == 503
        assert outcome[0].code == "model_unloaded"
        assert env.ups["a"].state == UpstreamState.STOPPED


async def test_unload_drops_queued_requests_for_the_model_with_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b")) as env:
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        outcome: list[ProxyError] = []
        env.nursery.start_soon(refused_load, env, "b", outcome)
        await wait_until(lambda: len(env.router.snapshot().queue) == 1)
        assert await env.router.unload("b") == []
        await wait_until(lambda: bool(outcome))
        assert outcome[0].code == "model_unloaded"
        release.set()


async def test_unload_all_stops_every_running_model_and_returns_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = group_config(group("g", "a", "b", swap=False))
    async with running(config) as env:
        await env.router.load("a")
        await env.router.load("b")
        assert await env.router.unload() == ["a", "b"]
        assert {u.state for u in env.ups.values()} == {UpstreamState.STOPPED}
        with pytest.raises(ProxyError) as info:
            await env.router.unload("zzz")
        assert info.value.status == 404


async def test_shutdown_while_loading_refuses_the_waiters_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a"), start_delay=100) as env:
        outcome: list[ProxyError] = []
        env.nursery.start_soon(refused_load, env, "a", outcome)
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STARTING)
        start = trio.current_time()
        env.router.begin_shutdown()
        await wait_until(lambda: bool(outcome))
        assert trio.current_time() - start < 1
        assert outcome[0].code == "shutting_down"
        with pytest.raises(ProxyError) as info:
            await env.router.load("a")
        assert info.value.code == "shutting_down"


async def test_retired_by_a_reload_the_router_refuses_with_config_reloaded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a"), start_delay=100) as env:
        outcome: list[ProxyError] = []
        env.nursery.start_soon(refused_load, env, "a", outcome)
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STARTING)
        env.router.begin_shutdown(errors.config_reloaded)
        await wait_until(lambda: bool(outcome))
        assert (outcome[0].status, outcome[0].code) == (503, "config_reloaded")
        assert ("retry-after", "1") in outcome[0].headers
        with pytest.raises(ProxyError) as info:
            await env.router.load("a")
        assert info.value.code == "config_reloaded"


async def test_failed_load_releases_all_its_waiters_and_the_next_request_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        env.ups["a"].fail_with = StartFailed("a", "exited", "exited before healthy", "boom")
        outcome: list[ProxyError] = []
        for _ in range(3):
            env.nursery.start_soon(refused_load, env, "a", outcome)
        await wait_until(lambda: len(outcome) == 3)
        assert {(e.status, e.code) for e in outcome} == {(502, "upstream_error")}
        assert "boom" in outcome[0].message
        assert env.ups["a"].starts == 1
        done = [e for e in env.events("swap") if e["phase"] == "done"]
        assert done[0]["ok"] is False
        assert "boom" in done[0]["error"]
        await env.router.load("a")
        assert env.ups["a"].starts == 2


async def test_swap_waits_for_the_group_a_failed_start_left_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # given a whose start fails at once (502) but whose group needs 5 s more to be gone
    async with running(single_group("a", "b")) as env:
        env.ups["a"].fail_with = StartFailed("a", "exited", "exited before healthy")
        env.ups["a"].fail_teardown = 5.0
        with pytest.raises(ProxyError) as info:
            await env.router.load("a")
        assert info.value.status == 502
        failed_at = trio.current_time()
        # when b, which evicts a, is requested right after
        async with env.router.serve("b"):
            # then b was started only once a's group was gone
            assert env.ups["a"].state == UpstreamState.STOPPED
            assert trio.current_time() - failed_at >= 5
        # and a starts again normally afterwards
        await env.router.load("a")
        assert env.ups["a"].starts == 2


async def test_health_timeout_is_answered_504(autojump_clock: trio.testing.MockClock) -> None:
    async with running(single_group("a")) as env:
        env.ups["a"].fail_with = StartFailed("a", "timeout", "not healthy within 120s")
        with pytest.raises(ProxyError) as info:
            await env.router.load("a")
        assert (info.value.status, info.value.code) == (504, "gateway_timeout")


async def test_requests_for_the_same_model_are_served_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b")) as env:
        order: list[str] = []

        async def request(model: str) -> None:
            async with env.router.serve(model):
                order.append(model)
                await trio.sleep(1)

        for model in "abab":
            env.nursery.start_soon(request, model)
            await trio.sleep(0.01)
        await wait_until(lambda: len(order) == 4)
        assert order == list("aabb")
        assert (env.ups["a"].starts, env.ups["b"].starts) == (1, 1)


async def test_waiting_requests_are_served_by_priority(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "lo", "hi", priority={"hi": 10})) as env:
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        done = trio.Event()
        done.set()
        env.nursery.start_soon(hold, env, "lo", done, served)
        await trio.sleep(0.01)
        env.nursery.start_soon(hold, env, "hi", done, served)
        await wait_until(lambda: len(env.router.snapshot().queue) == 2)
        assert [e.model for e in env.router.snapshot().queue] == ["hi", "lo"]
        release.set()
        await wait_until(lambda: len(served) == 3)
        assert served == ["a", "hi", "lo"]


async def test_loads_with_disjoint_evictions_run_in_parallel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = group_config(group("g", "a", exclusive=False), group("h", "b", exclusive=False))
    async with running(config, start_delay=10) as env:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(env.router.load, "a")
            nursery.start_soon(env.router.load, "b")
        assert trio.current_time() - start < 15


async def test_crashed_model_is_started_again_by_the_next_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        await env.router.load("a")
        env.ups["a"].crash()
        await env.router.load("a")
        assert env.ups["a"].starts == 2
        assert env.ups["a"].state == UpstreamState.READY


async def test_request_during_a_crash_teardown_waits_for_it_then_starts_the_model_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # given a ready model whose process exited by itself; its group takes 5 s to be gone
    async with running(single_group("a")) as env:
        await env.router.load("a")
        env.nursery.start_soon(env.ups["a"].exit_by_itself, 5.0)
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STOPPING)
        start = trio.current_time()
        # when a request comes in during the teardown
        async with env.router.serve("a") as grant:
            # then it is granted only once the model was started again, never to the dead process
            assert grant.upstream.state == UpstreamState.READY
        assert env.ups["a"].starts == 2
        assert trio.current_time() - start >= 5


async def test_progress_reports_queue_position_load_and_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a", "b")) as env:
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        told: list[Progress] = []

        async def request() -> None:
            async with env.router.serve("b", on_progress=told.append):
                pass

        env.nursery.start_soon(request)
        await wait_until(lambda: bool(told))
        release.set()
        await wait_until(lambda: len(told) == 3)
        assert told[0] == Progress("queued", position=1)
        assert told[1] == Progress("loading", evict=("a",))
        assert told[2].kind == "ready"
        assert told[2].load_seconds > 0
        queues = env.events("queue")
        assert queues[0]["queue"] == [{"model": "b", "position": 1, "reason": "in_flight"}]
        assert queues[-1]["queue"] == []


async def test_require_ready_refuses_a_model_that_is_not_loaded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        with pytest.raises(ProxyError) as info:
            async with env.router.serve("a", require_ready=True):
                pass
        assert info.value.status == 409
        assert env.ups["a"].starts == 0


async def test_stopping_the_router_answers_every_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a"), start_delay=100) as env:
        outcome: list[ProxyError] = []
        async with trio.open_nursery() as clients:
            clients.start_soon(refused_load, env, "a", outcome)
            await wait_until(lambda: env.ups["a"].state == UpstreamState.STARTING)
            env.router_scope.cancel()
        assert outcome[0].code == "shutting_down"


async def test_requests_and_unloads_left_in_the_inbox_when_the_router_stops_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        outcome: list[object] = []

        async def request() -> None:
            with pytest.raises(ProxyError) as info:
                await env.router.load("a")
            outcome.append(info.value.code)

        async def unload() -> None:
            outcome.append(await env.router.unload())

        async def stop_router() -> None:
            env.router_scope.cancel()

        # given clients that post to the router and a stop of the router, all in one scheduling
        # batch: the router task does not run in between, so whatever order they run in, the
        # messages after the first are still in its inbox when it stops (the first request may
        # be handled at once, on the inline fast path, and then be unloaded by an unload; in
        # some of trio's orders both requests take that path and join one load, which an unload
        # then stops: both get model_unloaded, as SPEC 3.5 says)
        with trio.fail_after(10):
            async with trio.open_nursery() as clients:
                clients.start_soon(request)
                clients.start_soon(unload)
                clients.start_soon(request)
                clients.start_soon(unload)
                clients.start_soon(stop_router)
        # then every one of them was answered: 503 (shutting_down, or model_unloaded for a
        # request whose load an unload stopped), and each unload with the models it stopped
        codes = sorted(o for o in outcome if isinstance(o, str))
        unloads = [o for o in outcome if isinstance(o, list)]
        assert len(codes) == 2
        assert set(codes) <= {"shutting_down", "model_unloaded"}
        assert len(unloads) == 2
