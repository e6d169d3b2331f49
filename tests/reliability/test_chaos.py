"""Chaos, bounded in count and time: SIGKILL the daemon and its watchdog at the worst moments,
restart it on the same config, and check that nothing of the old run survives and the model
answers 200 (SPEC 6.4; figures in RELIABILITY.md).

- the fork moment: the upstream's own command kills the daemon and the watchdog the instant it
  runs (or a few ms later), so the kill lands as close to the fork as anything can;
- a stop with a dead leader: a ``sh -c 'server & wait'`` leader dies at the first SIGTERM of an
  unload while its server ignores SIGTERM and keeps the group and the port.

The watchdog is killed as well each time, so the launcher's EOF rule and the state file are the
only defences left.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.conftest import Daemon, StartDaemon, _group_members
from tests.e2e.conftest import proc_table as _proc_table
from tests.fakes import fake_argv, free_port

#: delays (ms) between the upstream's command starting and its kill of the daemon, one round each
FORK_DELAYS_MS = (0, 0, 0, 1, 5, 20)
STOP_ROUNDS = 3


def _children(pid: int) -> dict[int, bytes]:
    return {p: cmd for p, (ppid, _, cmd) in _proc_table().items() if ppid == pid}


def _watchdog_of(daemon: Daemon) -> int:
    for pid, cmd in _children(daemon.process.pid).items():
        if b"watchdog_child" in cmd:
            return pid
    raise AssertionError("the daemon has no watchdog")


def _with_marker(marker: str) -> set[int]:
    """Processes whose command line carries ``marker`` (this round's upstreams)."""
    return {p for p, (_, _, cmd) in _proc_table().items() if marker.encode() in cmd}


async def _kill_daemon_and_watchdog(daemon: Daemon, watchdog: int) -> None:
    os.kill(watchdog, signal.SIGKILL)
    os.kill(daemon.process.pid, signal.SIGKILL)
    await daemon.wait_exit()


def _config(port: int, cmd: str, unload_timeout: int) -> str:
    return (
        f"health_check_timeout = 30\nstart_port = {port}\nunload_timeout = {unload_timeout}\n"
        f"[models.a]\ncmd = {json.dumps(cmd)}\n"
    )


async def _restart_and_serve(start_daemon: StartDaemon, config: str, path: Path) -> int:
    """A daemon restarted on the same config file (so the same state file): serve ``a``."""
    again = await start_daemon(config, "--config", str(path))
    async with again.client() as client:
        with trio.fail_after(30):
            response = await client.post(
                "/v1/chat/completions",
                json={"model": "a", "messages": [{"role": "user", "content": "hi"}]},
            )
    assert response.status_code == 200, response.text
    served = int(response.json()["pid"])
    again.signal(signal.SIGTERM)
    assert await again.wait_exit() == 0
    return served


@pytest.mark.parametrize("delay_ms", FORK_DELAYS_MS)
async def test_sigkill_at_the_fork_moment_leaves_nothing_and_a_restart_serves(
    start_daemon: StartDaemon, tmp_path: Path, delay_ms: int
) -> None:
    # The upstream's own command SIGKILLs its daemon and the watchdog the moment it runs (after
    # ``delay_ms``), then becomes the server: no poll from outside can hit the instant between
    # the fork and the daemon recording the process, but the process itself is there at it.
    # Only the first start does so (a marker directory), not the restarted daemon's.
    marker = f"chaos-fork-{os.getpid()}-{delay_ms}-{free_port()}"
    once, watchdog_file = tmp_path / "killed-once", tmp_path / "watchdog.pid"
    server = shlex.join(fake_argv("--model-id", marker))
    pause = f"sleep {delay_ms / 1000}; " if delay_ms else ""
    # builtins only before the kill (set -C makes the redirection fail once the file exists):
    # a fork of mkdir or cat would give the daemon milliseconds to record the process
    script = (
        f"if (set -C; : > {shlex.quote(str(once))}) 2>/dev/null; then {pause}"
        f'read -r w < {shlex.quote(str(watchdog_file))}; kill -KILL "$w" "$PPID"; fi; '
        f'exec {server} --port "$0" > /dev/null 2>&1'  # no SIGPIPE once the daemon is gone
    )
    cmd = shlex.join(["sh", "-c", script, "${PORT}"])
    config = _config(free_port(), cmd, unload_timeout=2)
    daemon = await start_daemon(config)
    watchdog_file.write_text(str(_watchdog_of(daemon)))

    # when a load starts the upstream, which kills the daemon and its watchdog at once
    try:
        async with daemon.client() as client:
            await client.post("/api/models/load/a")
    except httpx.HTTPError:
        pass  # the daemon died under it: expected
    assert await daemon.wait_exit() == -signal.SIGKILL
    survivors = _with_marker(marker)

    # then a daemon restarted on the same config serves the model with a new process (an
    # orphan would hold the port: its start would fail)
    served = await _restart_and_serve(start_daemon, config, daemon.config_path)
    assert served not in survivors
    # and nothing of the old run survives
    with trio.fail_after(10):
        while _with_marker(marker):
            await trio.sleep(0.05)


@pytest.mark.parametrize("round_", range(STOP_ROUNDS))
async def test_sigkill_during_a_stop_whose_leader_died_leaves_nothing_and_a_restart_serves(
    start_daemon: StartDaemon, tmp_path: Path, round_: int
) -> None:
    marker = f"chaos-stop-{os.getpid()}-{round_}-{free_port()}"
    pid_file = tmp_path / "server.pid"
    server = shlex.join(
        fake_argv("--model-id", marker, "--ignore-sigterm", "--pid-file", str(pid_file))
    )
    cmd = shlex.join(["sh", "-c", f"{server} --port $0 & wait", "${PORT}"])
    config = _config(free_port(), cmd, unload_timeout=3)
    daemon = await start_daemon(config)
    watchdog = _watchdog_of(daemon)
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
    leader = next(p for p, cmd in _children(daemon.process.pid).items() if p != watchdog)
    server_pid = int(pid_file.read_text())

    async def unload() -> None:
        try:
            async with daemon.client() as client:
                await client.post("/api/models/unload/a")
        except httpx.HTTPError:
            pass  # the daemon died under it: expected

    async with trio.open_nursery() as nursery:
        # given a stop under way whose leader died at its SIGTERM, its server living on
        nursery.start_soon(unload)
        with trio.fail_after(10):
            while leader in _proc_table():
                await trio.sleep(0.005)
        assert server_pid in _proc_table()
        # when the daemon and its watchdog are SIGKILLed before the stop's SIGKILL
        await _kill_daemon_and_watchdog(daemon, watchdog)
        nursery.cancel_scope.cancel()
    assert _group_members(leader) == [server_pid]  # the group outlived its leader and daemon

    # then a restarted daemon ends that group and serves the model (the port is free again)
    served = await _restart_and_serve(start_daemon, config, daemon.config_path)
    assert served != server_pid
    with trio.fail_after(10):
        while _group_members(leader) or _with_marker(marker):
            await trio.sleep(0.05)
