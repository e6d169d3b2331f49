"""Crash-loop backoff (SPEC 6.4) in the router, with fake upstreams on the autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llama_swap_trio.errors import ProxyError
from llama_swap_trio.routing.backoff import Backoff
from llama_swap_trio.upstream.api import StartFailed, UpstreamState

from .builders import single_group
from .test_router import Env, running


async def failed_request(env: Env, model: str = "a") -> ProxyError:
    """A request whose start fails (the server exits before it is ready)."""
    env.ups[model].fail_with = StartFailed(model, "exited", f"[{model}] exited (code 1)")
    with pytest.raises(ProxyError) as info:
        async with env.router.serve(model):
            pass
    return info.value


async def refused(env: Env, model: str = "a") -> ProxyError:
    with pytest.raises(ProxyError) as info:
        async with env.router.serve(model):
            pass
    return info.value


async def test_three_failed_starts_in_a_row_back_off_and_requests_get_503_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        for _ in range(3):
            assert (await failed_request(env)).status == 502
        assert env.ups["a"].starts == 3

        # then a request is refused at once, saying when to retry and why, without a start
        before = trio.current_time()
        error = await refused(env)
        assert trio.current_time() - before < 0.01
        assert error.status == 503
        assert error.code == "model_backoff"
        assert dict(error.headers)["retry-after"] == "10"
        assert "[a] exited (code 1)" in error.message
        assert env.ups["a"].starts == 3
        assert [m.state for m in env.router.snapshot().models] == [UpstreamState.BACKOFF]
        states = [(e["previous"], e["state"]) for e in env.events("model_state")]
        assert ("stopped", "backoff") in states

        # and after the 10 s cooldown the next request tries again; a fourth failure backs off
        # for twice as long
        await trio.sleep(10)
        assert [m.state for m in env.router.snapshot().models] == [UpstreamState.STOPPED]
        assert (await failed_request(env)).status == 502
        assert env.ups["a"].starts == 4
        assert dict((await refused(env)).headers)["retry-after"] == "20"


async def test_an_api_load_ends_the_backoff_and_a_success_forgets_the_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(single_group("a")) as env:
        for _ in range(3):
            await failed_request(env)
        assert (await refused(env)).code == "model_backoff"

        await env.router.load("a")  # POST /api/models/load/a

        assert env.ups["a"].state == UpstreamState.READY
        async with env.router.serve("a"):
            pass
        await env.router.unload("a")
        # the failures were forgotten: one more failure does not back off
        assert (await failed_request(env)).status == 502
        assert env.ups["a"].starts == 5
        env.ups["a"].fail_with = None
        async with env.router.serve("a"):
            pass


def test_cooldowns_double_per_further_failure_up_to_300_s() -> None:
    backoff = Backoff()
    cooldowns = [backoff.failed("a", 0.0, "boom") for _ in range(10)]
    assert cooldowns == [None, None, 10, 20, 40, 80, 160, 300, 300, 300]
