"""Tell a SIGHUP that means "reload" from the hang-up of the daemon's own terminal (SPEC 6.4).

Closing the terminal the daemon runs in (a terminal window, ``tmux kill-session``, an ssh session
that drops) hangs up its tty: the kernel drops it as the controlling terminal of every process of
its session and sends SIGHUP to the session leader, whose shell passes SIGHUP on to its jobs. A
daemon that took that SIGHUP for "reload" would run on with no terminal. So a SIGHUP is a hang-up
when the daemon had a controlling terminal at startup and no longer has one now (``/dev/tty`` no
longer opens: ``ENXIO`` once the kernel dropped it, ``EIO`` while it is being hung up).

A SIGHUP always reloads when the daemon started without a terminal (systemd's ``ExecReload``, a
container, ``setsid``) or with SIGHUP ignored (``nohup``: the user asked to outlive the terminal).
"""

from __future__ import annotations

import os
import signal


def has_controlling_terminal() -> bool:
    """True if ``/dev/tty`` (this process's controlling terminal) opens now."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


class HangupDetector:
    """Decides, at each SIGHUP, whether it is the hang-up of the daemon's terminal.

    Create it before SIGHUP is handled (trio's signal receiver replaces an ignored disposition).
    """

    def __init__(self) -> None:
        nohup = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        self._watching = not nohup and has_controlling_terminal()

    def terminal_hung_up(self) -> bool:
        """True if the terminal the daemon started in is gone (see the module docstring)."""
        return self._watching and not has_controlling_terminal()
