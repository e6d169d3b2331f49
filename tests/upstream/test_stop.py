"""Stopping: process groups, grace then SIGKILL, cmd_stop, concurrency, shutdown. Real clock."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import trio

from llama_swap_trio.upstream.api import StartFailed, StateChanged, UpstreamState
from tests.upstream.helpers import (
    fake_argv,
    free_port,
    group_gone,
    make_model,
    open_upstream,
    wait_until,
)

S = UpstreamState


async def test_stop_ends_wrapper_server_and_grandchild_holding_the_pipes(
    nursery: trio.Nursery,
) -> None:
    # given `sh -c '<server> & wait'`, whose server forks a grandchild holding stdout/stderr
    port = free_port()
    server = shlex.join(fake_argv(port, "--fork-grandchild"))
    h = await open_upstream(nursery, make_model(["sh", "-c", f"{server} & wait"], port=port))
    await h.upstream.start()
    pgid = h.upstream.pid
    assert pgid is not None
    await wait_until(lambda: any("grandchild pid" in line for line in h.logs.lines()))
    # when stopped
    t0 = trio.current_time()
    await h.upstream.stop()
    # then within a second no live process of the group remains
    assert trio.current_time() - t0 < 1.0
    assert group_gone(pgid)
    assert h.upstream.state is S.STOPPED


async def test_server_ignoring_sigterm_is_killed_after_unload_timeout_not_before(
    nursery: trio.Nursery,
) -> None:
    # given a server that ignores SIGTERM, with unload_timeout = 1 s
    port = free_port()
    model = make_model(fake_argv(port, "--ignore-sigterm"), port=port, unload_timeout=1)
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    pgid = h.upstream.pid
    assert pgid is not None
    # when stopped
    t0 = trio.current_time()
    async with trio.open_nursery() as inner:
        inner.start_soon(h.upstream.stop)
        await trio.sleep(0.7)
        # then it is still alive while the grace runs
        assert not group_gone(pgid)
    # and the stop returned soon after the grace, with the group gone
    elapsed = trio.current_time() - t0
    assert 1.0 <= elapsed < 2.5
    assert group_gone(pgid)
    assert any("received SIGTERM" in line for line in h.logs.lines())


async def test_cmd_stop_runs_with_pid_substituted_and_model_env(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # given a cmd_stop that records its $PID argument and a variable of the model's env, then kills
    out = tmp_path / "stop.txt"
    port = free_port()
    script = f'echo "$STOP_MARK ${{PID}}" > {shlex.quote(str(out))}; kill -TERM ${{PID}}'
    model = make_model(
        fake_argv(port),
        port=port,
        cmd_stop=shlex.join(["sh", "-c", script]),
        env={"STOP_MARK": "from-model-env"},
        unload_timeout=10,
    )
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    pid = h.upstream.pid
    # when stopped
    t0 = trio.current_time()
    await h.upstream.stop()
    # then cmd_stop saw the upstream pid and the model env, and it did the stopping (fast)
    assert out.read_text().split() == ["from-model-env", str(pid)]
    assert trio.current_time() - t0 < 5
    assert pid is not None
    assert group_gone(pid)


async def test_cmd_stop_popen_rejects_falls_back_to_sigterm(nursery: trio.Nursery) -> None:
    # given a cmd_stop Popen refuses with ValueError, not OSError (a NUL byte, which TOML allows)
    port = free_port()
    model = make_model(fake_argv(port), port=port, cmd_stop="kill\x00 ${PID}", unload_timeout=10)
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    pid = h.upstream.pid
    assert pid is not None
    # when stopped
    with trio.fail_after(5):
        await h.upstream.stop()
    # then SIGTERM stood in for it: the group is gone long before the grace ran out
    assert h.upstream.state is UpstreamState.STOPPED
    assert group_gone(pid)


async def test_stop_is_idempotent(nursery: trio.Nursery) -> None:
    port = free_port()
    h = await open_upstream(nursery, make_model(fake_argv(port), port=port))
    await h.upstream.stop()  # stopped: no-op
    await h.upstream.start()
    async with trio.open_nursery() as inner:
        for _ in range(3):
            inner.start_soon(h.upstream.stop)
    await h.upstream.stop()
    assert h.states() == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]


async def test_concurrent_starts_spawn_one_process(nursery: trio.Nursery, tmp_path: Path) -> None:
    # given one upstream and five concurrent start requests
    events = tmp_path / "events"
    port = free_port()
    h = await open_upstream(
        nursery, make_model(fake_argv(port, "--events", str(events)), port=port)
    )
    async with trio.open_nursery() as inner:
        for _ in range(5):
            inner.start_soon(h.upstream.start)
    # then exactly one process was started and all five returned with it ready
    starts = [line for line in events.read_text().splitlines() if line.startswith("start ")]
    assert len(starts) == 1
    assert h.upstream.generation == 1
    assert h.upstream.state is S.READY


async def test_stop_during_start_aborts_it_and_leaves_nothing(nursery: trio.Nursery) -> None:
    # given a start in progress (the server is slow to turn healthy)
    port = free_port()
    model = make_model(fake_argv(port, "--healthy-after", "30"), port=port)
    h = await open_upstream(nursery, model)
    failures: list[StartFailed] = []

    async def starter() -> None:
        try:
            await h.upstream.start()
        except StartFailed as exc:
            failures.append(exc)

    async with trio.open_nursery() as inner:
        inner.start_soon(starter)
        await wait_until(lambda: h.upstream.pid is not None)
        pgid = h.upstream.pid
        assert pgid is not None
        # when a stop arrives
        await h.upstream.stop()
    # then the start failed as cancelled, the state is stopped and the group is gone
    assert [f.reason for f in failures] == ["cancelled"]
    assert h.upstream.state is S.STOPPED
    assert group_gone(pgid)


async def test_start_during_stop_waits_for_the_stop_then_starts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # given a ready server that takes 0.5 s to stop
    events = tmp_path / "events"
    port = free_port()
    argv = fake_argv(port, "--sigterm-delay", "0.5", "--events", str(events))
    h = await open_upstream(nursery, make_model(argv, port=port))
    await h.upstream.start()
    first = h.upstream.pid
    # when a stop and then a start are requested together
    async with trio.open_nursery() as inner:
        inner.start_soon(h.upstream.stop)
        await wait_until(lambda: h.upstream.state is S.STOPPING)
        inner.start_soon(h.upstream.start)
    # then the stop completed first, and a new process is ready (no lost stop, no double start)
    assert first is not None
    assert group_gone(first)
    assert h.upstream.state is S.READY
    assert h.upstream.generation == 2
    assert h.upstream.pid not in (None, first)
    assert h.states() == [S.STARTING, S.READY, S.STOPPING, S.STOPPED, S.STARTING, S.READY]


async def test_cancelling_run_stops_every_process_and_ends_in_shutdown(
    nursery: trio.Nursery,
) -> None:
    # given one ready upstream and one still starting, each in its own run() scope
    port_a, port_b = free_port(), free_port()
    async with trio.open_nursery() as daemon:
        a = await open_upstream(daemon, make_model(fake_argv(port_a), port=port_a))
        b = await open_upstream(
            daemon, make_model(fake_argv(port_b, "--healthy-after", "30"), port=port_b)
        )
        await a.upstream.start()
        failures: list[str] = []

        async def start_b() -> None:
            try:
                await b.upstream.start()
            except StartFailed as exc:
                failures.append(exc.reason)

        # the waiter is a request-side task: it lives outside the upstreams nursery
        nursery.start_soon(start_b)
        await wait_until(lambda: b.upstream.pid is not None)
        pids = [a.upstream.pid, b.upstream.pid]
        # when the upstreams nursery is cancelled
        daemon.cancel_scope.cancel()
    # then every group is gone and both ended in shutdown
    assert all(pid is not None and group_gone(pid) for pid in pids)
    assert a.upstream.state is S.SHUTDOWN
    assert b.upstream.state is S.SHUTDOWN
    await wait_until(lambda: bool(failures))
    assert failures == ["cancelled"]
    # and a start after shutdown fails at once
    with pytest.raises(StartFailed):
        await a.upstream.start()


async def test_ttl_expiry_is_reported_not_acted_on(nursery: trio.Nursery) -> None:
    # given a ready model with ttl = 1 s
    port = free_port()
    h = await open_upstream(nursery, make_model(fake_argv(port), port=port, ttl=1))
    await h.upstream.start()
    t0 = trio.current_time()
    # when it stays idle
    await wait_until(lambda: any(type(e).__name__ == "IdleExpired" for e in h.events), 5)
    # then IdleExpired came after about the ttl, and the model was not stopped by itself
    assert trio.current_time() - t0 >= 0.9
    assert h.upstream.state is S.READY
    assert not any(isinstance(e, StateChanged) and e.state is S.STOPPING for e in h.events)


async def test_cmd_stop_runs_to_its_end_after_the_group_is_gone_and_its_output_is_logged(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # given a cmd_stop that ends the server at once, then has more to do (a multi-node script)
    out = tmp_path / "stop.txt"
    port = free_port()
    touch = shlex.quote(str(out))
    script = f"kill -TERM ${{PID}}; sleep 1; echo second node stopped; touch {touch}"
    model = make_model(
        fake_argv(port), port=port, cmd_stop=shlex.join(["sh", "-c", script]), unload_timeout=10
    )
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    # when stopped
    await h.upstream.stop()
    # then the stop returned only once cmd_stop had finished, and its output is in the model's log
    assert out.exists()
    assert "second node stopped" in h.logs.lines()


async def test_cmd_stop_that_outlasts_the_grace_is_killed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    out = tmp_path / "stop.txt"
    port = free_port()
    script = f"kill -TERM ${{PID}}; sleep 30; touch {shlex.quote(str(out))}"
    model = make_model(
        fake_argv(port), port=port, cmd_stop=shlex.join(["sh", "-c", script]), unload_timeout=1
    )
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    t0 = trio.current_time()
    await h.upstream.stop()
    assert trio.current_time() - t0 < 5
    assert not out.exists()
