"""The health watchdog on a real process that stops answering (SIGSTOP). Real clock."""

from __future__ import annotations

import os
import signal

import attrs
import pytest
import trio

from llama_swap_trio.upstream import health
from llama_swap_trio.upstream.api import StateChanged, UpstreamState
from tests.upstream.helpers import fake_argv, free_port, group_gone, make_model, open_upstream

S = UpstreamState


async def test_a_sigstopped_server_is_stopped_as_wedged_and_says_why(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a ready model probed every 0.1 s, each probe bounded by 0.3 s, 2 failures allowed
    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.3)
    port = free_port()
    model = attrs.evolve(
        make_model(fake_argv(port), port=port, unload_timeout=1),
        health_interval=0.1,
        health_failures=2,
    )
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    pid = h.upstream.pid
    assert pid is not None
    await trio.sleep(0.5)
    assert h.upstream.state is S.READY  # a healthy server is left alone

    # when the server stops answering (its port still accepts connections)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = trio.current_time()
    with trio.fail_after(20):
        while h.upstream.state is not S.STOPPED:
            await trio.sleep(0.02)

    # then it was stopped as wedged within failures x (interval + probe bound) plus the
    # unload_timeout its SIGTERM waits (a stopped process does not act on it), and says why
    assert trio.current_time() - stopped_at < 2 * (0.1 + 0.3) + 1 + 3
    assert group_gone(pid)
    stopping = [e for e in h.events if isinstance(e, StateChanged) and e.state is S.STOPPING]
    assert stopping[-1].reason == "health"
    assert stopping[-1].error is not None
    assert "stopped as wedged: 2 health checks in a row failed" in stopping[-1].error

    # and the next start runs a new process
    await h.upstream.start()
    assert h.upstream.pid not in (None, pid)


async def test_no_watchdog_when_it_is_off(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.3)
    monkeypatch.setattr(health, "OFF_RECHECK", 0.05)
    port = free_port()
    model = attrs.evolve(
        make_model(fake_argv(port), port=port, unload_timeout=1),
        health_interval=0.0,
        health_failures=1,
    )
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    pid = h.upstream.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await trio.sleep(1.5)
        assert h.upstream.state is S.READY
    finally:
        os.kill(pid, signal.SIGCONT)
