"""The router with the memory rule (SPEC 6.7), fake upstreams, trio's autojump clock."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from llama_swap_trio.config.model import Config

from .builders import group, group_config
from .test_router import hold, running, wait_until

GiB = 1024**3


def budget(sizes: dict[str, int], gpu: int = 16 * GiB) -> Config:
    config = group_config(group("all", *sizes, swap=False, exclusive=False))
    models = {m: attrs.evolve(c, memory=sizes[m]) for m, c in config.models.items()}
    return attrs.evolve(config, models=models, gpu_memory=gpu)


async def test_a_load_that_needs_a_busy_models_memory_waits_for_its_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(budget({"a": 8 * GiB, "b": 8 * GiB, "c": 12 * GiB})) as env:
        await env.router.load("a")
        await env.router.load("b")
        done = trio.Event()
        env.nursery.start_soon(hold, env, "a", done)
        env.nursery.start_soon(hold, env, "b", done)
        await wait_until(lambda: env.in_flight() == {"a": 1, "b": 1, "c": 0})
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
