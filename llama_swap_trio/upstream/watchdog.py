"""The daemon's side of the watchdog process (see :mod:`.watchdog_child` for the why).

The daemon holds the only write end of the watchdog's stdin. Writes are tiny lines, far below
``PIPE_BUF`` (atomic) and the 64 KiB pipe buffer, and the watchdog reads all the time, so they are
done synchronously: registering a group right after spawning it leaves no await, hence no
cancellation point, between "the process exists" and "the watchdog knows it".
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import trio

import llama_swap_trio

log = logging.getLogger(__name__)

# The watchdog imports only the standard library and our stdlib-only modules: it must start fast
# and keep working whatever the daemon's environment looks like.
_PACKAGE_ROOT = str(Path(llama_swap_trio.__file__).resolve().parent.parent)
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from llama_swap_trio.upstream.watchdog_child import main; sys.exit(main())"
)
#: how long closing waits for the watchdog to exit (it may be ending groups left registered)
CLOSE_WAIT = 5.0


class Watchdog:
    """A running watchdog process; create with :meth:`start`."""

    def __init__(self, proc: trio.Process, write_fd: int) -> None:
        self._proc = proc
        self._fd: int | None = write_fd
        self._broken = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(cls) -> Watchdog:
        """Start the watchdog process. Raises OSError when it cannot start."""
        read_fd, write_fd = os.pipe()  # both ends close-on-exec: no upstream ever inherits them
        try:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", _BOOT, _PACKAGE_ROOT],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                # own session: out of the terminal's foreground group, Ctrl-C is not for it
                start_new_session=True,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        return cls(proc, write_fd)

    def add(self, pgid: int, grace: float) -> None:
        self._send(f"add {pgid} {grace:.3f}\n")

    def remove(self, pgid: int) -> None:
        self._send(f"del {pgid}\n")

    def _send(self, line: str) -> None:
        if self._fd is None or self._broken:
            return
        try:
            os.write(self._fd, line.encode("ascii"))
        except OSError as exc:
            self._broken = True
            log.warning(
                "the upstream watchdog (pid %d) is gone (%s): upstreams will not be ended "
                "if the daemon dies (the state file still lets the next daemon end them)",
                self._proc.pid,
                exc,
            )

    async def aclose(self) -> None:
        """Close the pipe (the watchdog ends what is still registered, then exits) and reap it.

        Shielded and bounded: safe in a ``finally`` during cancellation.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
            await self._proc.wait()
