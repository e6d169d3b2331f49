"""How many client connections the edge serves at once (SPEC 6.1 ``max_connections``).

Every client connection costs a file descriptor, and so does everything a model needs: the
pipes and process of a start, its readiness probe, each forwarded request's upstream connection.
Without a limit, a flood of clients (300 stalled ones under a 256-fd limit) takes every
descriptor, and the next model start fails with ``Too many open files``. So the edge takes at most
``max_connections`` connections at once; beyond that it stops accepting, new clients wait in the
kernel's listen backlog, and idle keep-alive connections are closed first to make room.

``max_connections = 0`` derives the limit from ``RLIMIT_NOFILE``: a quarter of it (at least 64)
stays free for upstream processes, pipes and connections, and so do the descriptors the daemon
already holds when it starts (its listeners, the process guard, log files).
"""

from __future__ import annotations

import logging
import os
import resource

import trio

log = logging.getLogger(__name__)

#: descriptors kept for upstream processes, pipes and connections: this share of the limit...
RESERVE_SHARE = 4
#: ...and at least this many
MIN_RESERVE = 64
#: what an unlimited (or absurd) RLIMIT_NOFILE counts as
_UNLIMITED = 1 << 20


def fd_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` of this process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED if soft == resource.RLIM_INFINITY or soft > _UNLIMITED else soft


def open_fds() -> int:
    """Descriptors this process holds now (0 where ``/proc`` cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself opened
    except OSError:
        return 0


def derived_max_connections(limit: int | None = None, in_use: int | None = None) -> int:
    """``max_connections`` for ``max_connections = 0``: the fd ``limit`` less the reserve and
    the descriptors ``in_use`` (both read from the process when not given); at least 1."""
    limit = fd_limit() if limit is None else limit
    in_use = open_fds() if in_use is None else in_use
    reserve = max(MIN_RESERVE, limit // RESERVE_SHARE)
    return max(1, limit - reserve - in_use)


class ConnectionSlots:
    """A count of the connections being served, and a wait for a free slot.

    Not a semaphore with a task per waiter: the accept loop is the only one that waits, and it
    must wait *before* ``accept()`` so that a client beyond the limit stays in the backlog.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._freed: trio.Event | None = None

    def is_full(self) -> bool:
        return self.active >= self.limit

    def take(self) -> None:
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    async def wait_released(self) -> None:
        """Until some connection ends."""
        event = self._freed
        if event is None:
            event = self._freed = trio.Event()
        await event.wait()


class AcceptTrouble:
    """``accept()`` failing for lack of resources (EMFILE, ENFILE, ENOMEM, ENOBUFS): the pause
    before the next try, growing while it lasts, and one log line per episode instead of one per
    try (the old loop logged ten errors a second)."""

    FIRST_PAUSE = 0.1
    MAX_PAUSE = 1.0

    def __init__(self) -> None:
        self.since: float | None = None
        self.pause = self.FIRST_PAUSE

    def failed(self, exc: OSError) -> float:
        """Note a failed accept; returns how long to pause before trying again."""
        if self.since is None:
            self.since = trio.current_time()
            log.warning("cannot accept new connections (%s); waiting for descriptors to free", exc)
        else:
            self.pause = min(self.pause * 2, self.MAX_PAUSE)
            log.debug("accept() still failing: %s", exc)
        return self.pause

    def succeeded(self) -> None:
        if self.since is not None:
            log.info("accepting connections again after %.1f s", trio.current_time() - self.since)
            self.since = None
            self.pause = self.FIRST_PAUSE
