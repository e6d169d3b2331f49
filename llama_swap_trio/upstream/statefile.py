"""The state file: which upstream process groups a daemon has running, so a successor can end them.

If a daemon dies without stopping its upstreams (a crash; even SIGKILL, should the watchdog be
gone too), the next daemon started on the same config reads this file and ends the groups it lists.
Each entry records the leader's pid AND its start time (``/proc/<pid>/stat`` field 22): a group is
ended only when a process with that pid and that start time still exists, so a pid reused by an
unrelated process is never touched.

The file lives under ``$XDG_STATE_HOME/llama-swap-trio/`` (default ``~/.local/state``), named
after the config file and a digest of its absolute path (``config.toml-<digest>.state.json``), so
two daemons on two configs never share one and a checkout's directory stays clean. Writes are
atomic: a temporary file in the same directory, then ``rename``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import attrs

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def state_file_path(config_path: str) -> Path:
    """Where the daemon running ``config_path`` records its upstreams."""
    config = Path(config_path).expanduser().absolute()
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(config).encode()).hexdigest()[:16]
    return base / "llama-swap-trio" / f"{config.name}-{digest}.state.json"


@attrs.frozen
class Entry:
    """One running upstream process group."""

    pid: int
    pgid: int
    #: ``/proc/<pid>/stat`` field 22 of the leader when it was recorded
    start_time: int
    argv: tuple[str, ...]
    model: str = ""
    #: seconds between SIGTERM and SIGKILL when this group has to be ended
    grace: float = 10.0


@attrs.frozen
class StateRecord:
    #: the daemon that wrote the file, and its start time (None when unknown)
    daemon_pid: int | None
    daemon_start_time: int | None
    entries: tuple[Entry, ...]


def read_state(path: Path) -> StateRecord | None:
    """The recorded state, or None when there is no file or it cannot be understood."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read state file %s: %s", path, exc)
        return None
    try:
        data = json.loads(raw)
        entries = tuple(
            Entry(
                pid=int(item["pid"]),
                pgid=int(item["pgid"]),
                start_time=int(item["start_time"]),
                argv=tuple(str(a) for a in item.get("argv", ())),
                model=str(item.get("model", "")),
                grace=float(item.get("grace", 10.0)),
            )
            for item in data.get("upstreams", ())
        )
        daemon = data.get("daemon") or {}
        pid = daemon.get("pid")
        start = daemon.get("start_time")
        return StateRecord(
            daemon_pid=int(pid) if pid is not None else None,
            daemon_start_time=int(start) if start is not None else None,
            entries=entries,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return None


def write_state(
    path: Path, daemon_pid: int, daemon_start_time: int | None, entries: Iterable[Entry]
) -> None:
    """Replace the file atomically (temporary file + rename). Raises OSError."""
    data = {
        "version": FORMAT_VERSION,
        "daemon": {"pid": daemon_pid, "start_time": daemon_start_time},
        "upstreams": [
            {
                "model": e.model,
                "pid": e.pid,
                "pgid": e.pgid,
                "start_time": e.start_time,
                "argv": list(e.argv),
                "grace": e.grace,
            }
            for e in entries
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
