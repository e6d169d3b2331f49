"""Sleep mode (SPEC 6.7) with the real demo upstream in ``--sleep-mode``: same pid while sleeping,
a start wakes it, a failed sleep stops it, a failed wake restarts it, a stop ends a sleeper."""

from __future__ import annotations

import attrs
import httpx
import trio

from llama_swap_trio.config.memory import SleepConfig, parse_endpoint
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.upstream.api import IdleExpired, UpstreamState
from tests.upstream.helpers import (
    PY,
    free_port,
    group_gone,
    make_model,
    open_upstream,
    wait_until,
)

S = UpstreamState


def sleepy(
    *, sleep: str = "POST /sleep?level=1", wake: str = "POST /wake_up", ttl: int = 0
) -> ModelConfig:
    port = free_port()
    argv = (PY, "-m", "llama_swap_trio", "demo-upstream", "--port", str(port), "--sleep-mode")
    model = make_model(argv, port=port, ttl=ttl)
    return attrs.evolve(model, sleep=SleepConfig(parse_endpoint(sleep), parse_endpoint(wake)))


async def is_sleeping(model: ModelConfig) -> bool:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(model.proxy + "/is_sleeping")
    return bool(answer.json()["is_sleeping"])


async def test_evict_puts_it_to_sleep_with_the_same_pid_and_a_start_wakes_it(
    nursery: trio.Nursery,
) -> None:
    model = sleepy()
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    pid = h.upstream.pid
    await h.upstream.evict()
    assert h.upstream.state is S.SLEEPING
    assert h.upstream.pid == pid
    assert not group_gone(pid)
    assert await is_sleeping(model)
    await h.upstream.start()
    assert h.upstream.state is S.READY
    assert h.upstream.pid == pid
    assert h.upstream.generation == 1  # the same process: pooled connections stay good
    assert not await is_sleeping(model)
    assert h.states() == [S.STARTING, S.READY, S.SLEEPING, S.STARTING, S.READY]
    await h.upstream.stop()
    assert group_gone(pid)


async def test_a_failed_sleep_falls_back_to_a_stop(nursery: trio.Nursery) -> None:
    h = await open_upstream(nursery, sleepy(sleep="POST /no-such-sleep"))
    await h.upstream.start()
    pid = h.upstream.pid
    assert pid is not None
    await h.upstream.evict()
    assert h.upstream.state is S.STOPPED
    assert group_gone(pid)


async def test_a_failed_wake_falls_back_to_a_restart(nursery: trio.Nursery) -> None:
    h = await open_upstream(nursery, sleepy(wake="POST /no-such-wake"))
    await h.upstream.start()
    pid = h.upstream.pid
    await h.upstream.evict()
    assert h.upstream.state is S.SLEEPING
    await h.upstream.start()
    assert h.upstream.state is S.READY
    assert h.upstream.pid != pid
    assert pid is not None
    assert group_gone(pid)
    assert h.upstream.generation == 2
    await h.upstream.stop()


async def test_a_sleeping_model_is_stopped_by_stop_and_by_its_ttl_report(
    nursery: trio.Nursery,
) -> None:
    h = await open_upstream(nursery, sleepy(ttl=1))
    await h.upstream.start()
    await h.upstream.evict()
    assert h.upstream.state is S.SLEEPING
    # the idle timer keeps counting while it sleeps and reports to the router (which stops it)
    await wait_until(lambda: any(isinstance(e, IdleExpired) for e in h.events), timeout=10)
    pid = h.upstream.pid
    assert pid is not None
    await h.upstream.stop()
    assert h.upstream.state is S.STOPPED
    assert group_gone(pid)


async def test_a_model_without_a_sleep_mode_is_stopped_by_evict(nursery: trio.Nursery) -> None:
    model = attrs.evolve(sleepy(), sleep=None)
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    await h.upstream.evict()
    assert h.upstream.state is S.STOPPED
