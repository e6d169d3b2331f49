"""ProcessGuard: upstreams never outlive the daemon (SPEC 1, differs from llama-swap).

Two lines of defence, combined behind one small interface (``register`` / ``unregister``):

1. the watchdog process (:mod:`.watchdog`): when the daemon dies, even by SIGKILL, it ends every
   registered group within moments;
2. the state file (:mod:`.statefile`): if both died, the next daemon on the same config ends the
   leftovers at its start: a group whose leader still has the recorded pid AND start time, and a
   group whose leader died while members of it live on (a ``sh -c 'server & wait'`` leader dies at
   the first SIGTERM while a server that ignores it keeps the group and the port).

Usage (the daemon)::

    async with open_process_guard(state_file_path(config.path)) as guard:
        ...  # Upstream(..., guard=guard)
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from llama_swap_trio.upstream import procfs
from llama_swap_trio.upstream.statefile import Entry, read_state, state_file_path, write_state
from llama_swap_trio.upstream.watchdog import Watchdog

__all__ = [
    "GuardError",
    "ProcessGuard",
    "end_leftovers",
    "open_process_guard",
    "state_file_path",
]

log = logging.getLogger(__name__)

#: upper bound of the grace given to a crashed daemon's leftovers before SIGKILL
LEFTOVER_MAX_GRACE = 10.0
KILL_WAIT = 5.0
POLL = 0.02


class GuardError(RuntimeError):
    """The guard cannot protect this daemon (e.g. another daemon runs with the same config)."""


class ProcessGuard:
    """Records running upstream groups in the watchdog and the state file."""

    def __init__(self, state_path: Path, watchdog: Watchdog | None) -> None:
        self._path = state_path
        self._watchdog = watchdog
        self._entries: dict[int, Entry] = {}
        self._pid = os.getpid()
        self._start_time = procfs.start_time(self._pid)

    @property
    def state_path(self) -> Path:
        return self._path

    @property
    def registered(self) -> tuple[int, ...]:
        """The pgids currently registered."""
        return tuple(self._entries)

    def register(
        self, pid: int, pgid: int, argv: Sequence[str], *, model: str = "", grace: float = 10.0
    ) -> None:
        """Record a freshly spawned group. Synchronous on purpose: no cancellation point between
        spawning a process and recording it."""
        start = procfs.start_time(pid)
        if self._watchdog is not None:
            self._watchdog.add(pgid, grace)
        self._entries[pgid] = Entry(
            pid=pid,
            pgid=pgid,
            start_time=start if start is not None else -1,
            argv=tuple(argv),
            model=model,
            grace=grace,
        )
        self._save()

    def unregister(self, pgid: int) -> None:
        """The group is gone (the daemon ended it, or it ended by itself)."""
        if self._entries.pop(pgid, None) is None:
            return
        if self._watchdog is not None:
            self._watchdog.remove(pgid)
        self._save()

    def kill_all(self) -> None:
        """SIGKILL every registered group now (the daemon's second signal: no more waiting).

        The Upstreams still notice the exits, reap their processes and unregister them."""
        for pgid in list(self._entries):
            procfs.signal_group(pgid, signal.SIGKILL)

    def _save(self) -> None:
        try:
            write_state(self._path, self._pid, self._start_time, self._entries.values())
        except OSError as exc:
            log.warning("cannot write state file %s: %s", self._path, exc)


@asynccontextmanager
async def open_process_guard(
    state_path: Path | str, *, watchdog: bool = True
) -> AsyncIterator[ProcessGuard]:
    """End a crashed predecessor's leftovers, start the watchdog, and yield the guard.

    Args:
        state_path: the state file (see :func:`~.statefile.state_file_path`).
        watchdog: start the watchdog process (tests of the state file alone turn it off).

    Raises:
        GuardError: the state file belongs to another daemon that is still running.
    """
    path = Path(state_path)
    await end_leftovers(path)
    dog = await Watchdog.start() if watchdog else None
    guard = ProcessGuard(path, dog)
    guard._save()
    try:
        yield guard
    finally:
        with trio.CancelScope(shield=True):
            if dog is not None:
                await dog.aclose()
            if guard.registered:
                log.warning("upstream groups still registered at exit: %s", guard.registered)
            else:
                _remove(path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


async def end_leftovers(path: Path) -> list[Entry]:
    """End the groups a previous daemon recorded in ``path``; return the ones that were ended.

    A group is ended only if its leader still exists with the recorded start time.

    Raises:
        GuardError: the daemon that wrote the file is still running (and is not us).
    """
    record = read_state(path)
    if record is None:
        return []
    me = os.getpid()
    if (
        record.daemon_pid is not None
        and record.daemon_pid != me
        and record.daemon_start_time is not None
        and procfs.start_time(record.daemon_pid) == record.daemon_start_time
    ):
        raise GuardError(
            f"another llama-swap-trio daemon (pid {record.daemon_pid}) is running with this "
            f"config (state file {path}); stop it first"
        )
    leftovers: list[Entry] = []
    for entry in record.entries:
        if entry.start_time < 0:
            continue
        leader = procfs.start_time(entry.pid)
        if leader == entry.start_time:
            log.warning(
                "ending leftover upstream of a previous daemon: model %r pid %d (%s)",
                entry.model,
                entry.pid,
                " ".join(entry.argv),
            )
            leftovers.append(entry)
        elif leader is None and (members := _orphaned_members(entry)):
            log.warning(
                "ending leftover process group %d of a previous daemon (model %r, %s): its "
                "leader pid %d died, members %s live on",
                entry.pgid,
                entry.model,
                " ".join(entry.argv),
                entry.pid,
                ", ".join(f"{pid} ({_name(pid)})" for pid in members),
            )
            leftovers.append(entry)
    if leftovers:
        async with trio.open_nursery() as nursery:
            for entry in leftovers:
                nursery.start_soon(_end_group, entry.pgid, min(entry.grace, LEFTOVER_MAX_GRACE))
    return leftovers


def _orphaned_members(entry: Entry) -> list[int]:
    """The live members of a recorded group whose leader is gone (SPEC 6.4).

    Such a group is still ours: the kernel never hands out a pid (so never a new group of that
    id) while a group with that id exists, so the group can only be the recorded one. Members
    started before the recorded leader cannot be its descendants: they are left alone.
    """
    return [
        pid
        for pid in procfs.group_members(entry.pgid)
        if (started := procfs.start_time(pid)) is not None and started >= entry.start_time
    ]


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


async def _end_group(pgid: int, grace: float) -> None:
    # Not our child: no Process to wait on; watch the group through /proc instead.
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        if not procfs.signal_group(pgid, sig):
            return
        with trio.move_on_after(wait):
            # polling /proc: group membership has no event to wait on
            while procfs.group_alive(pgid):  # noqa: ASYNC110
                await trio.sleep(POLL)
            return
    log.error("leftover process group %d survived SIGKILL", pgid)
