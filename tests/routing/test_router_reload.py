"""The router across a configuration reload (SPEC 6.4), with fake upstreams on the autojump clock.

Kept models keep their upstream, their requests in flight and their readiness; restarted and
removed ones are stopped once their requests in flight are done (at most 5 s); requests waiting
for a restarted model are served by its new upstream, those for a removed one get 503.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from llama_swap_trio.config.model import Config
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.routing.router import RETIRE_DRAIN_SECONDS
from llama_swap_trio.upstream.api import UpstreamState

from .builders import group, group_config
from .fakes import FakeUpstream
from .test_router import Env, hold, running, wait_until


def with_description(config: Config, model_id: str, description: str) -> Config:
    models = dict(config.models)
    models[model_id] = attrs.evolve(models[model_id], description=description)
    return attrs.evolve(config, models=models)


def without(config: Config, model_id: str) -> Config:
    models = {m: c for m, c in config.models.items() if m != model_id}
    return attrs.evolve(config, models=models)


def reconfigure(
    env: Env,
    config: Config,
    *,
    restarted: tuple[str, ...] = (),
    removed: tuple[str, ...] = (),
) -> tuple[trio.Event, dict[str, FakeUpstream]]:
    """Reconfigure the router the way the runtime does: new fake upstreams for restarted ones."""
    router = env.router
    fresh = {m: FakeUpstream(config.models[m], router.notify) for m in restarted}
    for upstream in fresh.values():
        env.nursery.start_soon(upstream.run)
    done = trio.Event()
    router.reconfigure(config, fresh, restarted=restarted, removed=removed, done=done)
    return done, fresh


#: a and b run side by side (one group, no swapping)
TOGETHER = group_config(group("g", "a", "b", swap=False))


async def test_a_kept_model_keeps_its_upstream_and_stream_and_takes_new_settings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(TOGETHER) as env:
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        old_a = env.ups["a"]

        # when a reload changes only a's description
        done, _ = reconfigure(env, with_description(TOGETHER, "a", "new words"))
        await done.wait()

        # then a was never stopped, its request is still in flight, and a new request is
        # served at once by the same upstream with the new settings
        assert old_a.stops == 0
        assert env.in_flight()["a"] == 1
        before = trio.current_time()
        async with env.router.serve("a") as grant:
            assert grant.upstream is old_a
            assert grant.model.description == "new words"
        assert trio.current_time() - before < 0.1
        release.set()


async def test_a_restarted_model_stops_after_its_request_in_flight_and_serves_the_queue_anew(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(TOGETHER) as env:
        release = trio.Event()
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", release, served)
        await wait_until(lambda: served == ["a"])
        old_a = env.ups["a"]

        # when a reload restarts a while its request is in flight
        done, fresh = reconfigure(env, TOGETHER, restarted=("a",))
        # and a new request for a arrives
        answered: list[object] = []

        async def ask() -> None:
            async with env.router.serve("a") as grant:
                answered.append(grant.upstream)

        env.nursery.start_soon(ask)
        await trio.sleep(2)
        # then the old process still runs (its request is in flight) and the new one waits
        assert old_a.state == UpstreamState.READY
        assert answered == []

        # when the request ends, the old process stops and the new one serves the waiter
        release.set()
        await done.wait()
        await wait_until(lambda: answered == [fresh["a"]])
        assert old_a.stops == 1
        assert trio.current_time() < RETIRE_DRAIN_SECONDS


async def test_a_request_longer_than_the_drain_bound_does_not_hold_the_restart_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(TOGETHER) as env:
        served: list[str] = []
        env.nursery.start_soon(hold, env, "a", trio.Event(), served)
        await wait_until(lambda: served == ["a"])
        started = trio.current_time()

        done, _ = reconfigure(env, TOGETHER, restarted=("a",))
        await done.wait()

        assert env.ups["a"].stops == 1
        assert env.in_flight()["a"] == 1  # cut under its request (a real one ends with it)
        elapsed = trio.current_time() - started
        assert RETIRE_DRAIN_SECONDS <= elapsed < RETIRE_DRAIN_SECONDS + 1


async def test_requests_waiting_for_a_removed_model_get_503_config_reloaded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(TOGETHER, start_delay=10) as env:
        outcome: list[ProxyError] = []

        async def wait_for_b() -> None:
            with pytest.raises(ProxyError) as info:
                await env.router.load("b")
            outcome.append(info.value)

        env.nursery.start_soon(wait_for_b)
        await wait_until(lambda: env.ups["b"].state == UpstreamState.STARTING)

        # when b is removed while its load is under way
        done, _ = reconfigure(env, without(TOGETHER, "b"), removed=("b",))

        # then its waiter gets 503 config_reloaded at once, and its start is abandoned
        await wait_until(lambda: len(outcome) == 1)
        assert outcome[0].status == 503
        assert outcome[0].code == "config_reloaded"
        await done.wait()
        assert env.ups["b"].state == UpstreamState.STOPPED
        assert [m.id for m in env.router.snapshot().models] == ["a"]
        with pytest.raises(ProxyError) as info:
            await env.router.load("b")
        assert info.value.status == 404


async def test_a_load_of_the_old_definition_under_way_is_served_by_the_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(TOGETHER, start_delay=10) as env:
        answered: list[object] = []

        async def ask() -> None:
            async with env.router.serve("a") as grant:
                answered.append(grant.upstream)

        env.nursery.start_soon(ask)
        await wait_until(lambda: env.ups["a"].state == UpstreamState.STARTING)

        done, fresh = reconfigure(env, TOGETHER, restarted=("a",))
        await done.wait()

        await wait_until(lambda: answered == [fresh["a"]])
        assert env.ups["a"].state == UpstreamState.STOPPED
