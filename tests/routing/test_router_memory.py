"""The router with the memory rule (SPEC 6.7), fake upstreams, trio's autojump clock."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from llama_swap_trio.config.memory import SleepConfig, parse_endpoint
from llama_swap_trio.config.model import Config

from .builders import group, group_config, single_group
from .test_router import Env, hold, running, wait_until

GiB = 1024**3


def budget(sizes: dict[str, int], gpu: int = 16 * GiB) -> Config:
    config = group_config(group("all", *sizes, swap=False, exclusive=False))
    models = {m: attrs.evolve(c, memory=sizes[m]) for m, c in config.models.items()}
    return attrs.evolve(config, models=models, gpu_memory=gpu)


#: a and b fit together in one group; c needs the memory of both
C_NEEDS_A_AND_B = budget({"a": 8 * GiB, "b": 8 * GiB, "c": 12 * GiB})


async def a_and_b_busy(env: Env) -> trio.Event:
    """Load a and b and hold one request on each, until the returned event is set."""
    await env.router.load("a")
    await env.router.load("b")
    done = trio.Event()
    env.nursery.start_soon(hold, env, "a", done)
    env.nursery.start_soon(hold, env, "b", done)
    await wait_until(lambda: env.in_flight() == {"a": 1, "b": 1, "c": 0})
    return done


async def test_a_load_that_needs_a_busy_models_memory_waits_for_its_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(C_NEEDS_A_AND_B) as env:
        done = await a_and_b_busy(env)
        served: list[str] = []

        async def want_c() -> None:
            async with env.router.serve("c"):
                served.append("c")

        env.nursery.start_soon(want_c)
        await trio.sleep(30)
        assert served == []  # both busy: it waits, nothing is cut
        assert env.ups["a"].stopped_with_in_flight == []
        done.set()
        await wait_until(lambda: served == ["c"])
        assert env.ups["a"].stops == env.ups["b"].stops == 1
        assert env.ups["a"].stopped_with_in_flight == env.ups["b"].stopped_with_in_flight == [0]


async def test_a_request_that_waits_for_busy_models_memory_says_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # given a and b busy in a group that lets them run together, and c needing their memory
    async with running(C_NEEDS_A_AND_B) as env:
        done = await a_and_b_busy(env)

        async def want_c() -> None:
            async with env.router.serve("c"):
                pass

        env.nursery.start_soon(want_c)
        await wait_until(lambda: len(env.router.waiting_requests()) == 1)
        # then /api/queue and /api/plan say it waits for memory, held by both busy models
        assert [(w.model, w.reason) for w in env.router.waiting_requests()] == [("c", "memory")]
        plan = env.router.plan("c")
        assert plan.reason == "memory"
        assert sorted((b.model, b.reason) for b in plan.blocked_by) == [
            ("a", "memory"),
            ("b", "memory"),
        ]
        done.set()


async def test_the_least_recently_used_idle_model_goes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(budget({"a": 8 * GiB, "b": 8 * GiB, "c": 8 * GiB})) as env:
        await env.router.load("a")
        await env.router.load("b")
        await env.router.load("a")  # a is used again: b is now the least recent
        await env.router.load("c")
        assert env.ups["b"].stops == 1
        assert env.ups["a"].stops == 0
        states = {m.id: m.state for m in env.router.snapshot().models}
        assert states == {"a": "ready", "b": "stopped", "c": "ready"}
        # the metrics count it as an eviction for memory
        stops = [e for e in env.events("model_state") if e["state"] == "stopping"]
        assert [(e["model"], e.get("reason")) for e in stops] == [("b", "memory")]


def with_sleep(config: Config, *models: str, sleep_memory: int = 0) -> Config:
    endpoints = SleepConfig(parse_endpoint("POST /sleep?level=1"), parse_endpoint("POST /wake_up"))
    changed = {
        m: attrs.evolve(c, sleep=endpoints, sleep_memory=sleep_memory) if m in models else c
        for m, c in config.models.items()
    }
    return attrs.evolve(config, models=changed)


async def test_an_evicted_model_with_a_sleep_mode_sleeps_and_a_request_wakes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(with_sleep(single_group("a", "b"), "a")) as env:
        await env.router.load("a")
        await env.router.load("b")
        states = {m.id: m.state for m in env.router.snapshot().models}
        assert states == {"a": "sleeping", "b": "ready"}
        assert env.ups["a"].sleeps == 1
        assert env.ups["a"].stops == 0
        before = trio.current_time()
        await env.router.load("a")  # b has no sleep mode: it stops
        assert trio.current_time() - before < 1.0  # a wake (0.1 s), not a start (1 s)
        assert env.ups["a"].wakes == 1
        assert env.ups["a"].starts == 1
        assert env.ups["b"].stops == 1
        states = {m.id: m.state for m in env.router.snapshot().models}
        assert states == {"a": "ready", "b": "stopped"}


async def test_a_sleepers_memory_counts_and_is_freed_by_stopping_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sizes = {"a": 8 * GiB, "b": 8 * GiB, "c": 8 * GiB}
    config = with_sleep(budget(sizes), "a", sleep_memory=4 * GiB)
    async with running(config) as env:
        await env.router.load("a")
        await env.router.load("b")
        # 8 + 8 + 8 > 16: a (least recent) sleeps, keeping 4 GiB; 4 + 8 + 8 > 16: b stops too
        await env.router.load("c")
        states = {m.id: m.state for m in env.router.snapshot().models}
        assert states == {"a": "sleeping", "b": "stopped", "c": "ready"}
        # 4 (a asleep) + 8 + 8 > 16: the sleeper is the least recently used, and is stopped
        await env.router.load("b")
        states = {m.id: m.state for m in env.router.snapshot().models}
        assert states == {"a": "stopped", "b": "ready", "c": "ready"}
        assert (env.ups["a"].sleeps, env.ups["a"].stops) == (1, 1)


async def test_a_sleeping_models_ttl_stops_it(autojump_clock: trio.testing.MockClock) -> None:
    config = with_sleep(single_group("a", "b"), "a")
    config = attrs.evolve(
        config, models={**config.models, "a": attrs.evolve(config.models["a"], ttl=60)}
    )
    async with running(config) as env:
        await env.router.load("a")
        await env.router.load("b")
        assert env.ups["a"].state == "sleeping"
        await wait_until(lambda: env.ups["a"].state == "stopped", timeout=120)
        assert env.ups["a"].stops == 1
