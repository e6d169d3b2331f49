"""Upstream start, readiness, failures and exits, with real processes and the real clock."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import trio

from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.upstream import upstream as upstream_module
from llama_swap_trio.upstream.api import StartFailed, StateChanged, UpstreamState
from llama_swap_trio.upstream.ttl import IdleTimer
from tests.upstream.helpers import (
    PY,
    fake_argv,
    free_port,
    group_gone,
    make_model,
    open_upstream,
    wait_until,
)

S = UpstreamState


async def test_start_becomes_ready_and_stop_returns_to_stopped(nursery: trio.Nursery) -> None:
    # given a healthy fake server
    port = free_port()
    h = await open_upstream(nursery, make_model(fake_argv(port), port=port))
    # when it is started and then stopped
    await h.upstream.start()
    pid = h.upstream.pid
    assert pid is not None
    assert h.upstream.state is S.READY
    assert h.upstream.generation == 1
    await h.upstream.stop()
    # then the states went the normal cycle and the process is gone
    assert h.states() == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    assert h.upstream.pid is None
    assert group_gone(pid)
    assert any("listening on" in line for line in h.logs.lines())


async def test_readiness_is_noticed_promptly_after_health_answers_200(
    nursery: trio.Nursery,
) -> None:
    # given a server whose /health answers 503 for its first 0.3 s
    port = free_port()
    h = await open_upstream(
        nursery, make_model(fake_argv(port, "--healthy-after", "0.3"), port=port)
    )
    # when started
    t0 = trio.current_time()
    await h.upstream.start()
    elapsed = trio.current_time() - t0
    # then ready soon after it turned healthy (loose bound: interpreter start-up and a busy box)
    assert 0.3 <= elapsed < 1.5


async def test_a_line_the_server_prints_triggers_the_next_probe_at_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given probes a minute apart, and a server that starts listening (and says so) after 0.3 s
    monkeypatch.setattr(upstream_module, "PROBE_INTERVAL_MIN", 60.0)
    port = free_port()
    h = await open_upstream(
        nursery, make_model(fake_argv(port, "--startup-delay", "0.3"), port=port)
    )
    # when started, then it is ready on its "listening" line, not a minute later
    with trio.fail_after(30):
        await h.upstream.start()
    assert h.upstream.state is S.READY


async def test_check_endpoint_none_is_ready_once_spawned(nursery: trio.Nursery) -> None:
    h = await open_upstream(
        nursery, make_model([PY, "-c", "import time; time.sleep(60)"], check_endpoint="none")
    )
    with trio.fail_after(2):
        await h.upstream.start()
    assert h.upstream.state is S.READY


async def test_exit_during_startup_fails_at_once_with_its_last_output(
    nursery: trio.Nursery,
) -> None:
    # given a server that prints a fatal error and exits before it listens
    port = free_port()
    model = make_model(fake_argv(port, "--exit-at-startup", "3"), port=port)
    h = await open_upstream(nursery, model, health_check_timeout=30)
    # when started
    t0 = trio.current_time()
    with pytest.raises(StartFailed) as info:
        await h.upstream.start()
    # then the start fails well under the health timeout, carrying what the server said
    assert trio.current_time() - t0 < 5
    assert info.value.reason == "exited"
    assert "code 3" in info.value.message
    assert "fatal: cannot load model" in info.value.output
    assert len(info.value.output) <= 2048
    assert h.upstream.state is S.STOPPED


async def test_exit_during_startup_fails_at_once_even_if_a_grandchild_ignores_sigterm(
    nursery: trio.Nursery,
) -> None:
    # given a server that leaves a grandchild ignoring SIGTERM (and holding the pipes), then
    # exits before it is healthy; its group needs unload_timeout and SIGKILL to be gone
    port = free_port()
    script = "(trap '' TERM; exec sleep 30) & echo 'fatal: no model'; exit 3"
    model = make_model(["sh", "-c", script], port=port, unload_timeout=3)
    h = await open_upstream(nursery, model, health_check_timeout=30)
    # when started
    t0 = trio.current_time()
    with pytest.raises(StartFailed) as info:
        await h.upstream.start()
    # then the start fails at once (the pipes' drain, not the 3 s teardown), with the output
    assert trio.current_time() - t0 < 2.2
    assert info.value.reason == "exited"
    assert "fatal: no model" in info.value.output
    # and the group is still being torn down: stopping, which a new start would wait for
    pgid = h.upstream.pid
    assert pgid is not None
    assert h.upstream.state is S.STOPPING
    assert not group_gone(pgid)
    # and the teardown still ends the group (SIGKILL after unload_timeout), then stopped
    await h.upstream.stop()
    assert group_gone(pgid)
    assert h.upstream.state is S.STOPPED
    assert trio.current_time() - t0 >= 3


async def test_never_healthy_fails_at_health_timeout_and_is_gone(nursery: trio.Nursery) -> None:
    # given a server whose /health never answers 200
    port = free_port()
    model = make_model(fake_argv(port, "--never-healthy"), port=port)
    h = await open_upstream(nursery, model, health_check_timeout=1.0)
    pids: list[int] = []

    async def note_pid() -> None:
        await wait_until(lambda: h.upstream.pid is not None)
        pids.append(h.upstream.pid or 0)

    nursery.start_soon(note_pid)
    # when started
    t0 = trio.current_time()
    with pytest.raises(StartFailed) as info:
        await h.upstream.start()
    # then it failed at the health timeout, and nothing of it is left
    assert 1.0 <= trio.current_time() - t0 < 4.0
    assert info.value.reason == "timeout"
    assert h.upstream.state is S.STOPPED
    assert pids
    assert group_gone(pids[0])


async def test_command_that_cannot_run_fails_with_reason_spawn(nursery: trio.Nursery) -> None:
    h = await open_upstream(nursery, make_model(["/nonexistent/llama-server", "--port", "1"]))
    with pytest.raises(StartFailed) as info:
        await h.upstream.start()
    assert info.value.reason == "spawn"
    assert "/nonexistent/llama-server" in info.value.message
    assert h.upstream.state is S.STOPPED


async def test_command_popen_rejects_fails_with_reason_spawn_and_the_upstream_lives_on(
    nursery: trio.Nursery,
) -> None:
    # given a command Popen refuses with ValueError, not OSError (a NUL byte, which TOML allows)
    h = await open_upstream(nursery, make_model(["sle\x00ep", "100"], check_endpoint="none"))
    # when started, twice
    for _ in range(2):
        with pytest.raises(StartFailed) as info:
            await h.upstream.start()
        # then each start fails as "cannot run" (502) and the supervisor is still there
        assert info.value.reason == "spawn"
        assert h.upstream.state is S.STOPPED


async def test_port_held_by_a_stranger_fails_with_reason_port(nursery: trio.Nursery) -> None:
    # given another process (here: a listener of ours) already holding the model's port
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        h = await open_upstream(nursery, make_model(fake_argv(port), port=port))
        # when started
        with pytest.raises(StartFailed) as info:
            await h.upstream.start()
        # then it refuses, naming the port, and spawned nothing
        assert info.value.reason == "port"
        assert str(port) in info.value.message
        assert h.upstream.state is S.STOPPED
        assert h.logs.lines() == []
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_exit_after_ready_reports_stopped_with_error_and_logs_output(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # given a ready server that exits by itself shortly after
    port = free_port()
    model = make_model(fake_argv(port, "--exit-after", "0.2", "--exit-code", "4"), port=port)
    h = await open_upstream(nursery, model)
    await h.upstream.start()
    # when it exits
    with caplog.at_level(logging.WARNING):
        await wait_until(lambda: h.upstream.state is S.STOPPED)
    # then a StateChanged to stopped carries the error, and a warning shows its last lines
    last = [e for e in h.events if isinstance(e, StateChanged)][-1]
    assert last.state is S.STOPPED
    assert last.error is not None
    assert "exited unexpectedly" in last.error
    assert "code 4" in last.error
    assert any(
        "exited unexpectedly" in r.getMessage() and "listening on" in r.getMessage()
        for r in caplog.records
    )
    # and the next start simply starts again
    await h.upstream.start()
    assert h.upstream.generation == 2


async def test_exit_after_ready_reports_stopping_at_once_not_after_the_drain(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a ready server whose grandchild holds the pipes, so draining them takes all of
    # DRAIN_TIME (made long here, so the test does not race the real 0.5 s)
    monkeypatch.setattr(upstream_module, "DRAIN_TIME", 3.0)
    port = free_port()
    argv = fake_argv(port, "--fork-grandchild", "--exit-after", "0.2", "--exit-code", "4")
    h = await open_upstream(nursery, make_model(argv, port=port))
    await h.upstream.start()
    # when the server exits by itself
    await wait_until(lambda: any(line.startswith("exiting") for line in h.logs.lines()))
    # then the upstream says stopping (with the error) at once, while the pipes still drain
    await wait_until(lambda: h.upstream.state is not S.READY, timeout=2.0)
    assert h.upstream.state is S.STOPPING
    last = [e for e in h.events if isinstance(e, StateChanged)][-1]
    assert (last.previous, last.state) == (S.READY, S.STOPPING)
    assert last.error is not None
    assert "exited unexpectedly (code 4)" in last.error


async def test_exit_within_a_tick_of_ready_fails_the_start_as_an_exit_with_its_output(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a server that dies right after it was found ready, before its start() waiter runs:
    # killed from IdleTimer.arm, which runs in the same step, and waited for (synchronously)
    # until it can be reaped (WNOWAIT: left for the Upstream to reap; a zombie leader is not
    # reapable yet while the other threads of the process still exit)
    port = free_port()
    h = await open_upstream(nursery, make_model(fake_argv(port), port=port))
    original_arm = IdleTimer.arm
    killed: list[int] = []

    def arm_then_die(timer: IdleTimer) -> None:
        original_arm(timer)
        pid = h.upstream.pid
        if killed or pid is None:
            return
        killed.append(pid)
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while os.waitid(os.P_PID, pid, flags) is None:
            assert time.monotonic() < deadline, "the killed server did not die"
            time.sleep(0.001)

    monkeypatch.setattr(IdleTimer, "arm", arm_then_die)
    # when started
    with pytest.raises(StartFailed) as info:
        await h.upstream.start()
    # then it failed as an exit (502), not as a stop (503 model_unloaded), with its last output
    assert killed
    assert info.value.reason == "exited"
    assert "code -9" in info.value.message
    assert "listening on" in info.value.output
    # and the next start simply starts again
    await h.upstream.start()
    assert h.upstream.state is S.READY


async def test_chatty_server_never_blocks_and_log_memory_stays_bounded(
    nursery: trio.Nursery,
) -> None:
    # given a server that prints megabytes before it listens, and keeps printing
    port = free_port()
    logs = LogBuffer(max_bytes=64 * 1024)
    argv = fake_argv(port, "--chatty-lines", "60000", "--chatty-forever")
    h = await open_upstream(nursery, make_model(argv, port=port), logs=logs)
    # when started: it becomes ready (it would block on a full pipe if we did not read)
    with trio.fail_after(15):
        await h.upstream.start()
    await trio.sleep(0.3)
    # then the buffer holds at most its budget
    assert sum(len(line) + 1 for line in logs.lines()) <= 64 * 1024
    assert len([e for e in h.events if not isinstance(e, StateChanged)]) > 60000
