"""Spawning an upstream as a process-group leader, reading its output, and ending its group.

The rules (ARCHITECTURE rule 5, research/python-stack.md section 3):

1. Every upstream leads its own process group (``start_new_session=True``), so a ``sh -c`` wrapper
   and whatever it forks are signalled together: ``killpg``, never ``kill``.
2. Its stdout and stderr are read all the time: a chatty server must never block on a full pipe.
   Lines are capped in length, so a server that never prints a newline cannot grow our memory.
3. No process the guard does not know (SPEC 6.4, "no orphan in the fork window"): an upstream is
   started by :func:`spawn_gated`, whose child is a tiny ``/bin/sh`` launcher that blocks reading
   a go-ahead line on its stdin (a pipe only the daemon can write) and only then execs the
   command, in the same process (same pid and start time). The daemon sends the go-ahead once it
   has recorded the pid with the watchdog and the state file. If the daemon dies first (SIGKILL
   while the worker thread forks), the kernel closes the pipe, ``read`` sees EOF and the launcher
   exits without running anything. It costs about a millisecond per start (benchmarks/launcher.py).
4. Ending a group waits for the direct child (``Process.wait``) and then for every live member of
   the group (zombies ignored, see :mod:`.procfs`). It never waits for pipe EOF: a grandchild may
   hold the pipes (llama-swap's v219 "stop hangs" regression); the caller drains them for a short,
   bounded time after the group is gone.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

import trio

from llama_swap_trio.upstream.procfs import group_alive, signal_group

log = logging.getLogger(__name__)

#: bytes kept of one output line; the rest of an over-long line is dropped (memory stays bounded)
MAX_LINE_BYTES = 8 * 1024
#: how often a stop looks at the group while it waits for it to vanish
GROUP_POLL_INTERVAL = 0.02
#: how long a SIGKILLed group may take to vanish before we give up waiting (it is in the kernel's
#: hands then: uninterruptible sleep)
KILL_WAIT = 5.0

OnLine = Callable[[str], None]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment plus ``extra`` (extended, never replaced: llama-swap #171)."""
    env = dict(os.environ)
    env.update(extra)
    return env


async def spawn(argv: Sequence[str], env: Mapping[str, str]) -> trio.Process:
    """Start ``argv`` as the leader of a new session and process group.

    stdin is closed (``DEVNULL``); stdout and stderr are pipes the caller must keep reading.
    A new session (not only a new group) also detaches it from our terminal, so a Ctrl-C in the
    terminal reaches the daemon only, and the daemon decides how its upstreams stop.

    Raises:
        OSError: the command could not be started (not found, not executable...).
    """
    return await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )


#: the launcher (rule 3): wait for the go-ahead line on stdin, then become the command with
#: stdin on /dev/null as before; EOF (the daemon died before it sent it) exits instead
_LAUNCHER = 'read -r _ || exit 111; exec "$0" "$@" </dev/null'
#: the exit status of a launcher that never got its go-ahead
NO_GO_AHEAD = 111


class GoAhead:
    """The daemon's end of a launcher's go-ahead pipe. Closing it unsent makes the launcher exit."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def send(self) -> None:
        """Let the command run (one byte into an empty pipe: never blocks)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, b"\n")
        except OSError:
            pass  # the launcher is gone already: its exit is reported like any other
        finally:
            os.close(fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _check_runnable(program: str, env: Mapping[str, str]) -> None:
    """Raise what ``Popen`` would for a command that cannot run, before the launcher exists."""
    if shutil.which(program, path=env.get("PATH", os.defpath)) is not None:
        return
    if os.sep in program and os.path.exists(program):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


async def spawn_gated(argv: Sequence[str], env: Mapping[str, str]) -> tuple[trio.Process, GoAhead]:
    """Start ``argv`` like :func:`spawn`, held by the launcher until ``GoAhead.send`` (rule 3).

    Raises:
        OSError: the command could not be started (not found, not executable...).
    """
    if not argv:
        raise ValueError("empty command")
    _check_runnable(argv[0], env)
    read_fd, write_fd = os.pipe()  # both close-on-exec; the child gets read_fd as its stdin
    try:
        proc = await trio.lowlevel.open_process(
            ["/bin/sh", "-c", _LAUNCHER, *argv],
            stdin=read_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return proc, GoAhead(write_fd)


async def pump_lines(
    stream: trio.abc.ReceiveStream, on_line: OnLine, *, max_line: int = MAX_LINE_BYTES
) -> None:
    """Read ``stream`` until EOF and hand every line (without its newline) to ``on_line``.

    A line longer than ``max_line`` bytes is cut there, marked `` [truncated]``, and the rest of it
    is skipped up to the next newline. A last line without newline is delivered at EOF.
    """
    pending = bytearray()
    skipping = False  # inside the dropped tail of an over-long line
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        if not chunk:
            if pending and not skipping:
                on_line(_decode(pending))
            return
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if not skipping:
                room = max_line - len(pending)
                pending += piece[:room]
                if len(piece) > room:
                    on_line(_decode(pending) + " [truncated]")
                    pending.clear()
                    skipping = True
            if nl < 0:
                break
            if skipping:
                skipping = False
            else:
                on_line(_decode(pending))
                pending.clear()
            start = nl + 1


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r")


async def wait_group_gone(proc: trio.Process, pgid: int) -> None:
    """Return once the direct child is reaped and no live member of ``pgid`` remains."""
    await proc.wait()
    # Polling /proc: nothing signals "the last member of a group is gone" (they are not our
    # children, and zombies must be ignored).
    while group_alive(pgid):  # noqa: ASYNC110
        await trio.sleep(GROUP_POLL_INTERVAL)


async def terminate_group(
    proc: trio.Process,
    *,
    grace: float,
    stop_argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    on_stop_output: OnLine | None = None,
) -> bool:
    """Stop the group led by ``proc``: ``stop_argv`` or SIGTERM, ``grace`` seconds, then SIGKILL.

    Call it shielded. It is bounded: at most ``grace`` + :data:`KILL_WAIT` seconds.

    Args:
        proc: the group leader (pgid == pid).
        grace: seconds between the stop request and SIGKILL.
        stop_argv: the ``cmd_stop`` argv; when given, it is run (in its own group, with ``env``)
            instead of sending SIGTERM. It may run to its end within ``grace`` even when the
            group is gone first, and is killed if it still runs after that.
        env: the environment for ``stop_argv``.
        on_stop_output: receives the lines ``stop_argv`` prints.

    Returns:
        True when the group is gone, False when it survived SIGKILL for :data:`KILL_WAIT` seconds.
    """
    pgid = proc.pid
    if proc.returncode is not None and not group_alive(pgid):
        return True
    deadline = trio.current_time() + grace
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        if stop_argv:
            # The graceful request runs beside the wait, so a slow cmd_stop cannot stretch the
            # grace period (llama-swap sends its stop signal from a background task too).
            nursery.start_soon(
                _run_stop_command, stop_argv, env or child_env({}), pgid, on_stop_output, stopped
            )
        else:
            signal_group(pgid, signal.SIGTERM)
        gone = False
        with trio.move_on_at(deadline):
            await wait_group_gone(proc, pgid)
            gone = True
            if stop_argv:
                # cmd_stop runs to its end even when the group is gone first (within the same
                # grace): a multi-node stop script has more to do than end this process
                # (llama-swap #827)
                await stopped.wait()
        if not gone:
            log.warning("process group %d still alive after %.1f s: SIGKILL", pgid, grace)
            signal_group(pgid, signal.SIGKILL)
            with trio.move_on_after(KILL_WAIT):
                await wait_group_gone(proc, pgid)
                gone = True
        nursery.cancel_scope.cancel()
    if not gone:
        log.error("process group %d survived SIGKILL for %.0f s", pgid, KILL_WAIT)
    return gone


async def _run_stop_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    target_pgid: int,
    on_output: OnLine | None,
    done: trio.Event,
) -> None:
    """Run ``cmd_stop`` (``done`` is set when it ended); fall back to SIGTERM when it cannot
    start. Killed when cancelled."""
    try:
        await _stop_command(argv, env, target_pgid, on_output)
    finally:
        done.set()


async def _stop_command(
    argv: Sequence[str], env: Mapping[str, str], target_pgid: int, on_output: OnLine | None
) -> None:
    try:
        proc = await spawn(argv, env)
    except (OSError, ValueError) as exc:  # ValueError: Popen refuses e.g. a NUL byte
        log.warning("cmd_stop %r could not start (%s): sending SIGTERM instead", argv[0], exc)
        signal_group(target_pgid, signal.SIGTERM)
        return
    sink: OnLine = on_output or (lambda line: None)
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None
            assert proc.stderr is not None
            nursery.start_soon(pump_lines, proc.stdout, sink)
            nursery.start_soon(pump_lines, proc.stderr, sink)
            rc = await proc.wait()
            if rc != 0:
                log.warning("cmd_stop %r exited with code %d", argv[0], rc)
            # Its own grandchildren may hold the pipes: give them a moment, then stop reading.
            nursery.cancel_scope.deadline = trio.current_time() + 0.5
    finally:
        # Whatever happened, nothing of the stop command outlives the stop.
        signal_group(proc.pid, signal.SIGKILL)
        with trio.CancelScope(shield=True), trio.move_on_after(KILL_WAIT):
            await proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
