"""The watchdog process: ends the daemon's upstream groups when the daemon dies. Stdlib only.

Why a process and not ``PR_SET_PDEATHSIG``: that signal reaches only the direct child, and it fires
when the *thread* that forked the child exits; trio forks from worker threads that exit after 10 s
idle, so an upstream would be killed 10 s after its start (research/python-stack.md 3.4).

Protocol, on stdin (a pipe whose write end only the daemon holds), one command per line:

- ``add <pgid> <grace>``: a group to end if the daemon dies; ``grace`` seconds between SIGTERM and
  SIGKILL;
- ``del <pgid>``: the daemon ended that group itself.

EOF on stdin means the daemon is gone (exited, crashed or SIGKILLed: the kernel closes its fds).
Then every registered group gets SIGTERM, then SIGKILL after its grace, and the watchdog exits.
A daemon that shuts down cleanly has unregistered everything, so EOF then ends nothing.

The watchdog runs in its own session (no terminal: a Ctrl-C is not for it) and ignores SIGINT,
SIGTERM and SIGHUP, so it outlives whatever killed the daemon long enough to act. Only SIGKILL
ends it early, and then the state file is the second line of defence.
"""

from __future__ import annotations

import signal
import sys
import time

from llama_swap_trio.upstream.procfs import group_alive, signal_group

#: grace used when a line gives none, and the upper bound of any grace (a dead daemon's upstreams
#: should not linger for minutes)
DEFAULT_GRACE = 10.0
MAX_GRACE = 30.0
KILL_WAIT = 5.0
POLL = 0.05


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: dict[int, float] = {}
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        _apply(groups, line.decode("ascii", errors="replace").split())
    end_groups(groups)
    return 0


def _apply(groups: dict[int, float], words: list[str]) -> None:
    try:
        if len(words) >= 2 and words[0] == "add":
            grace = float(words[2]) if len(words) > 2 else DEFAULT_GRACE
            groups[int(words[1])] = min(max(grace, 0.0), MAX_GRACE)
        elif len(words) == 2 and words[0] == "del":
            groups.pop(int(words[1]), None)
    except ValueError:
        pass  # a garbled line must not kill the watchdog


def end_groups(groups: dict[int, float]) -> None:
    """SIGTERM every group, wait up to its grace, SIGKILL what is left."""
    if not groups:
        return
    now = time.monotonic()
    deadlines = {
        pgid: now + grace for pgid, grace in groups.items() if signal_group(pgid, signal.SIGTERM)
    }
    while deadlines:
        now = time.monotonic()
        for pgid, deadline in list(deadlines.items()):
            if not group_alive(pgid):
                del deadlines[pgid]
            elif now >= deadline:
                signal_group(pgid, signal.SIGKILL)
                del deadlines[pgid]
        time.sleep(POLL)


if __name__ == "__main__":
    sys.exit(main())
