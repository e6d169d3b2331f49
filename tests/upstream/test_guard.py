"""Upstreams never outlive the daemon: watchdog, state file, leftovers. Real processes and clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from llama_swap_trio.upstream import procfs
from llama_swap_trio.upstream.guard import GuardError, end_leftovers, open_process_guard
from llama_swap_trio.upstream.statefile import Entry, read_state, state_file_path, write_state
from tests.upstream.helpers import (
    fake_argv,
    free_port,
    group_gone,
    make_model,
    open_upstream,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]

DAEMON = textwrap.dedent(
    """
    import sys
    import trio
    from llama_swap_trio.logbuffer import LogBuffer
    from llama_swap_trio.upstream.guard import open_process_guard
    from llama_swap_trio.upstream.upstream import Upstream
    from tests.upstream.helpers import fake_argv, make_model

    async def main(state: str, port: int) -> None:
        async with open_process_guard(state) as guard:
            async with trio.open_nursery() as nursery:
                model = make_model(fake_argv(port), port=port, unload_timeout=2)
                upstream = Upstream(model, health_check_timeout=20, notify=lambda e: None,
                                    logs=LogBuffer(), guard=guard)
                await nursery.start(upstream.run)
                await upstream.start()
                dog = guard._watchdog
                print("READY", upstream.pid, dog.pid if dog else 0, flush=True)
                await trio.sleep_forever()

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def start_daemon(
    tmp_path: Path, state: Path, kill_groups: list[int]
) -> tuple[trio.Process, int, int]:
    """Run the tiny daemon above; return it, its upstream's pid and its watchdog's pid."""
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    daemon = await trio.lowlevel.open_process(
        [sys.executable, str(script), str(state), str(free_port())],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    kill_groups.append(daemon.pid)
    assert daemon.stdout is not None
    seen = b""
    with trio.fail_after(15):
        while b"\n" not in seen:
            chunk = await daemon.stdout.receive_some()
            assert chunk, "the daemon died before its upstream was ready"
            seen += chunk
    word, upstream_pid, dog_pid = seen.split(b"\n")[0].split()
    assert word == b"READY"
    kill_groups.extend([int(upstream_pid), int(dog_pid)])
    return daemon, int(upstream_pid), int(dog_pid)


async def test_sigkilled_daemon_takes_its_upstreams_with_it(
    tmp_path: Path, kill_groups: list[int]
) -> None:
    # given a daemon with a ready upstream
    state = tmp_path / ".config.toml.llama-swap-trio.state.json"
    daemon, upstream_pid, _ = await start_daemon(tmp_path, state, kill_groups)
    assert not group_gone(upstream_pid)
    # when the daemon is SIGKILLed
    os.kill(daemon.pid, signal.SIGKILL)
    await daemon.wait()
    # then its upstream's whole group dies within a few seconds
    await wait_until(lambda: group_gone(upstream_pid), timeout=5)


async def test_new_daemon_ends_leftovers_of_a_crashed_one(
    tmp_path: Path, kill_groups: list[int]
) -> None:
    # given a daemon that crashed so hard its watchdog died too: its upstream is orphaned
    state = tmp_path / ".config.toml.llama-swap-trio.state.json"
    daemon, upstream_pid, dog_pid = await start_daemon(tmp_path, state, kill_groups)
    os.kill(dog_pid, signal.SIGKILL)
    os.kill(daemon.pid, signal.SIGKILL)
    await daemon.wait()
    await trio.sleep(0.2)
    assert not group_gone(upstream_pid)
    # when a new daemon opens its guard on the same state file
    async with open_process_guard(state, watchdog=False) as guard:
        # then the leftover is gone, and the file now records only the new daemon
        assert group_gone(upstream_pid)
        record = read_state(state)
        assert record is not None
        assert record.daemon_pid == os.getpid()
        assert record.entries == ()
        assert guard.registered == ()
    # and a clean exit removes the file
    assert not state.exists()


@pytest.fixture
def sleepers() -> Iterator[Callable[[], int]]:
    """Start ``sleep 1000`` processes in their own sessions; all killed and reaped at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> int:
        procs.append(subprocess.Popen(["sleep", "1000"], start_new_session=True))
        return procs[-1].pid

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait()


async def test_leftover_reaping_spares_reused_pids_and_unrecorded_processes(
    tmp_path: Path, sleepers: Callable[[], int]
) -> None:
    # given a state file recording a live leftover, and a pid now used by another process
    # (recorded start time differs), and a third process the file does not mention at all
    leftover, reused, unrecorded = (sleepers() for _ in range(3))
    state = tmp_path / "state.json"

    def entry(pid: int, start_time: int) -> Entry:
        return Entry(pid=pid, pgid=pid, start_time=start_time, argv=("sleep", "1000"), grace=1)

    leftover_start = procfs.start_time(leftover)
    reused_start = procfs.start_time(reused)
    assert leftover_start is not None
    assert reused_start is not None
    write_state(
        state, 999_999_999, None, [entry(leftover, leftover_start), entry(reused, reused_start - 1)]
    )
    # when the leftovers are ended
    ended = await end_leftovers(state)
    # then only the recorded process with a matching start time was ended
    assert [e.pid for e in ended] == [leftover]
    await wait_until(lambda: group_gone(leftover))
    assert not group_gone(reused)
    assert not group_gone(unrecorded)


async def test_guard_refuses_a_state_file_of_a_daemon_that_still_runs(
    tmp_path: Path, sleepers: Callable[[], int]
) -> None:
    # given a state file whose daemon (here: some live process) still runs
    other = sleepers()
    state = tmp_path / "state.json"
    write_state(state, other, procfs.start_time(other), [])
    # when a guard opens on it, then it refuses instead of killing that daemon's upstreams
    with pytest.raises(GuardError, match=str(other)):
        async with open_process_guard(state, watchdog=False):
            pass


async def test_registering_records_the_group_in_the_state_file(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    port = free_port()
    async with open_process_guard(state) as guard:
        h = await open_upstream(nursery, make_model(fake_argv(port), port=port), guard=guard)
        await h.upstream.start()
        pid = h.upstream.pid
        record = read_state(state)
        assert record is not None
        assert [(e.pid, e.pgid, e.model) for e in record.entries] == [(pid, pid, "m")]
        assert record.entries[0].start_time == procfs.start_time(pid or 0)
        assert record.entries[0].argv == tuple(fake_argv(port))
        await h.upstream.stop()
        record = read_state(state)
        assert record is not None
        assert record.entries == ()


def test_state_file_lives_under_xdg_state_home_keyed_by_the_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    one = state_file_path(str(tmp_path / "a" / "models.toml"))
    other = state_file_path(str(tmp_path / "b" / "models.toml"))
    assert one.parent == tmp_path / "xdg" / "llama-swap-trio"
    assert one.name.startswith("models.toml-")
    assert one != other  # two daemons on two configs never share a state file
    assert not (tmp_path / "a").exists()  # nothing beside the config


def test_state_file_defaults_to_the_local_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = state_file_path(str(tmp_path / "models.toml"))
    assert path.parent == tmp_path / "home" / ".local" / "state" / "llama-swap-trio"


async def test_slow_upstream_idle_over_10s_is_not_killed_by_parent_death_protection(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """SLOW (~11 s): trio's worker threads exit after 10 s idle; a PR_SET_PDEATHSIG design would
    kill the upstream then (research/python-stack.md 3.4). The watchdog design must not."""
    port = free_port()
    async with open_process_guard(tmp_path / "state.json") as guard:
        h = await open_upstream(nursery, make_model(fake_argv(port), port=port), guard=guard)
        await h.upstream.start()
        pid = h.upstream.pid
        assert pid is not None
        await trio.sleep(11)  # the point of the test is the passing of time itself
        assert h.upstream.state.value == "ready"
        assert procfs.group_members(pid)
        await h.upstream.stop()


async def test_kill_all_ends_every_registered_group_at_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # given a ready upstream that ignores SIGTERM, with a long grace
    port = free_port()
    model = make_model(fake_argv(port, "--ignore-sigterm"), port=port, unload_timeout=30)
    async with open_process_guard(tmp_path / "state.json") as guard:
        h = await open_upstream(nursery, model, guard=guard)
        await h.upstream.start()
        pid = h.upstream.pid
        assert pid is not None
        # when the daemon gives up waiting (second Ctrl-C)
        t0 = trio.current_time()
        guard.kill_all()
        # then the group is gone at once, and the upstream noticed and unregistered it
        await wait_until(lambda: group_gone(pid), timeout=3)
        await wait_until(lambda: guard.registered == (), timeout=3)
        assert trio.current_time() - t0 < 3


def _group_outliving_its_recorded_leader(state: Path) -> tuple[int, int, Entry]:
    """A leader recorded in ``state`` that has exited (and been reaped), whose group lives on in
    a member ignoring SIGTERM; returns the leader's pid, the member's and the entry."""
    leader = subprocess.Popen(
        ["sh", "-c", '(trap "" TERM; exec sleep 1000) & echo $!; read _'],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert leader.stdout is not None
    assert leader.stdin is not None
    member = int(leader.stdout.readline())
    leader.stdout.close()
    started = procfs.start_time(leader.pid)
    assert started is not None
    entry = Entry(pid=leader.pid, pgid=leader.pid, start_time=started, argv=("sh",), grace=0.5)
    write_state(state, 999_999_999, None, [entry])
    leader.stdin.close()
    leader.wait(timeout=10)  # reaped: no process with its pid remains
    return leader.pid, member, entry


async def test_a_recorded_group_whose_leader_died_is_ended_when_members_live_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kill_groups: list[int]
) -> None:
    # given a `sh -c 'server & wait'`-like leader whose server ignores SIGTERM, recorded in a
    # state file, and then the leader dies (as it does at the first SIGTERM of a stop)
    leader, member, entry = _group_outliving_its_recorded_leader(tmp_path / "state.json")
    kill_groups.append(leader)
    state = tmp_path / "state.json"
    assert procfs.group_members(leader) == [member]

    # when a new daemon ends the leftovers
    with caplog.at_level("WARNING"):
        ended = await end_leftovers(state)

    # then the group is ended (SIGKILL after its grace), and the log says what was ended
    assert ended == [entry]
    await wait_until(lambda: group_gone(leader), timeout=10)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"leader pid {leader} died" in said
    assert f"{member} (sleep)" in said
