"""What Linux's ``/proc`` says about processes and process groups. Standard library only.

This module is imported by the watchdog process too (``watchdog_child``), which must start fast
and must not depend on trio, so it stays free of anything but the standard library.

Why not ``os.killpg(pgid, 0)`` to ask "is the group alive"? It also counts **zombies**: a
grandchild that exited but was not reaped yet (PID 1 of a container may take seconds to reap
orphans) still answers, and a stop would wait out its whole grace period for nothing. A zombie
holds no memory, VRAM or port, so here a member counts as alive only when its state is not ``Z``
(or ``X``, dead).
"""

from __future__ import annotations

import os
import signal
from typing import NamedTuple

_PROC = "/proc"
_DEAD_STATES = frozenset("ZX")


class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` that we use."""

    pid: int
    #: one letter: R, S, D, Z, T, X ...
    state: str
    pgrp: int
    #: field 22: clock ticks after boot at which the process started (identifies a process
    #: together with its pid: a reused pid has another start time)
    start_time: int


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed, or None when there is no such process (or no /proc)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return _parse_stat(pid, raw)


def _parse_stat(pid: int, raw: bytes) -> ProcStat | None:
    # Field 2 is "(comm)" and comm may hold spaces and parentheses: split after the LAST ")".
    end = raw.rfind(b")")
    if end < 0:
        return None
    rest = raw[end + 2 :].split()
    # rest[0] is field 3 (state), so field n is rest[n - 3].
    try:
        return ProcStat(
            pid=pid, state=rest[0].decode(), pgrp=int(rest[2]), start_time=int(rest[19])
        )
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """The start time (``/proc/<pid>/stat`` field 22) of ``pid``, or None when it does not exist."""
    stat = read_stat(pid)
    return None if stat is None else stat.start_time


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) members of process group ``pgid``."""
    # Cheap first check: no member at all, not even a zombie, means no /proc scan.
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # it exists but is not ours; /proc still tells us who is in it
    members: list[int] = []
    try:
        names = os.listdir(_PROC)
    except OSError:
        return [pgid]  # no /proc: fall back to "the group exists"
    for name in names:
        if not name.isdigit():
            continue
        stat = read_stat(int(name))
        if stat is not None and stat.pgrp == pgid and stat.state not in _DEAD_STATES:
            members.append(stat.pid)
    return members


def group_alive(pgid: int) -> bool:
    """True while some member of group ``pgid`` is alive (zombies do not count)."""
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
