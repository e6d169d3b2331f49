"""Configuration hot reload: what triggers one (SIGHUP, ``--watch-config``) and what it does.

Triggers:

- SIGHUP, always (the daemon's signal watcher calls :meth:`Reloader.trigger`);
- with ``--watch-config``, :func:`watch_config_file` polls the file's ``stat`` every
  :data:`POLL_SECONDS` (polling, not inotify, so bind mounts and symlink swaps such as a k8s
  ConfigMap work). It fires when ``(mtime_ns, size, inode)`` changes or a missing file reappears,
  stays quiet while the file is missing, and never fires on the baseline poll.

A reload (:meth:`Reloader.trigger`) that starts while another is still loading and switching is
dropped, not queued (as llama-swap). That window is short: it ends at the switch, not when the
previous generation has stopped.

The reload itself: load the file. If it is invalid, log every problem and keep serving the old
configuration. If it is valid, start a new :class:`~.generation.Generation` (its upstreams wait for
the old ones to be gone before spawning anything), switch the dispatcher to it, retire the old one,
re-apply the log settings, publish a fresh feed ``snapshot``, and start the new preload. Once the
old generation is gone, a second ``snapshot`` shows the settled states.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from llama_swap_trio.config import ConfigError, load_config
from llama_swap_trio.config.model import Config
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.generation import Dispatcher, Generation

log = logging.getLogger("llama_swap_trio")

#: seconds between two looks at the config file (llama-swap's value)
POLL_SECONDS = 2.0

#: what identifies a version of the file: (mtime_ns, size, inode); None while it is missing
StatKey = tuple[int, int, int] | None


def stat_key(path: str) -> StatKey:
    """The file's identity now (follows symlinks, so a swapped link target counts)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ChangeDetector:
    """Decides, poll by poll, whether the file changed. Pure: no I/O, no trio."""

    def __init__(self, baseline: StatKey) -> None:
        self._last = baseline

    def poll(self, key: StatKey) -> bool:
        """Record this poll's key; True if a reload should fire."""
        last, self._last = self._last, key
        return key is not None and key != last


async def watch_config_file(
    path: str,
    on_change: Callable[[], None],
    *,
    interval: float = POLL_SECONDS,
    stat: Callable[[str], StatKey] = stat_key,
) -> None:
    """Poll ``path`` forever; call ``on_change`` when it changed (see the module docstring)."""
    detector = ChangeDetector(stat(path))
    while True:
        await trio.sleep(interval)
        if detector.poll(stat(path)):
            on_change()


def _model_changes(old: Config, new: Config) -> str:
    added = sorted(new.models.keys() - old.models.keys())
    removed = sorted(old.models.keys() - new.models.keys())
    changed = sorted(
        m for m in new.models.keys() & old.models.keys() if new.models[m] != old.models[m]
    )
    parts = [
        f"{label}: {', '.join(ids)}"
        for label, ids in (("added", added), ("removed", removed), ("changed", changed))
        if ids
    ]
    return "; ".join(parts) or "no model changed"


class Reloader:
    """Replaces the current generation with one built from the file (see the module docstring).

    Args:
        path: the config file.
        dispatcher: its ``current`` generation is the one replaced.
        generations: the nursery every generation runs in.
        bus: for the fresh ``snapshot``.
        new_generation: builds a generation from a config, chained after the given one.
        apply_logging: re-applies ``log_level`` / ``log_to_stdout`` (and the feed's redaction).
        shutting_down: once true, reloads are ignored.
    """

    def __init__(
        self,
        path: str,
        *,
        dispatcher: Dispatcher,
        generations: trio.Nursery,
        bus: EventBus,
        new_generation: Callable[[Config, Generation], Generation],
        apply_logging: Callable[[Config], None],
        shutting_down: Callable[[], bool],
    ) -> None:
        self._path = path
        self._dispatcher = dispatcher
        self._generations = generations
        self._bus = bus
        self._new_generation = new_generation
        self._apply_logging = apply_logging
        self._shutting_down = shutting_down
        self._busy = False

    def trigger(self, why: str) -> None:
        """Start a reload in the background, unless one is under way. Non-blocking."""
        if self._shutting_down():
            log.info("%s: not reloading, the daemon is shutting down", why)
            return
        if self._busy:
            log.warning("%s: reload dropped, another reload is under way", why)
            return
        self._busy = True
        self._generations.start_soon(self._reload, why, name="config reload")

    async def _reload(self, why: str) -> None:
        old = self._dispatcher.current
        assert old is not None
        try:
            new = await self._switch(why, old)
        except Exception:  # a bug in building the new one must not take the daemon down
            log.exception("reload failed: still serving the previous configuration")
            return
        finally:
            self._busy = False
        if new is None:
            return
        started = trio.current_time()
        await old.stopped.wait()
        log.info(
            "configuration %d: previous upstreams gone after %.2f s; models may start",
            new.number,
            trio.current_time() - started,
        )
        if self._dispatcher.current is new:
            self._bus.publish(new.snapshot_message())

    async def _switch(self, why: str, old: Generation) -> Generation | None:
        log.info("%s: reloading %s", why, self._path)
        try:
            config = await trio.to_thread.run_sync(load_config, self._path)
        except ConfigError as error:
            for problem in error.problems:
                log.warning("%s", problem)
            log.warning(
                "configuration not reloaded (%d problem(s) above): still serving the previous one",
                len(error.problems),
            )
            return None
        new = self._new_generation(config, old)
        await self._generations.start(new.run)
        if self._shutting_down():  # a shutdown began while the new one was being built
            new.retire()
            return None
        # The switch: from here on, every new request reaches the new generation.
        self._dispatcher.current = new
        old.retire(keys_changed=set(config.api_keys) != set(old.config.api_keys))
        self._apply_logging(config)
        log.info(
            "configuration %d loaded (%s); previous upstreams stop before any new one starts",
            new.number,
            _model_changes(old.config, config),
        )
        self._bus.publish(new.snapshot_message())
        new.start_preload()
        return new
