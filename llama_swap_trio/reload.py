"""Configuration hot reload: what triggers one (SIGHUP, ``--watch-config``) and what it does.

Triggers:

- SIGHUP, always (the daemon's signal watcher calls :meth:`Reloader.trigger`);
- with ``--watch-config``, :func:`watch_config_file` polls the file's ``stat`` every
  :data:`POLL_SECONDS` (polling, not inotify, so bind mounts and symlink swaps such as a k8s
  ConfigMap work). It fires when ``(mtime_ns, size, inode)`` changes or a missing file reappears,
  stays quiet while the file is missing, and never fires on the baseline poll.

A triggered reload (:meth:`Reloader.trigger`) that comes while another is under way is dropped,
not queued (as llama-swap); ``POST /api/config/reload`` (:meth:`Reloader.reload`) waits for the one
under way and then reloads, since its caller waits for the outcome.

The reload itself (SPEC 6.4): load the file, with the ports of models that keep running pinned
(:func:`~.reload_plan.plan_reload`). If it is invalid, log every problem, keep serving the old
configuration and answer ``{"type": "reload", "ok": false, "errors": [...]}``. If it is valid,
switch the models (:meth:`~.generation.Runtime.apply`: kept ones keep their process, restarted and
removed ones are retired once their requests in flight are done, added ones wait for the ports to
be free), build the new configuration's app and switch the dispatcher to it, re-apply the log
settings, say which changed ``[server]`` keys wait for a restart and which applied
(:mod:`.reload_server`), publish a fresh feed ``snapshot`` and the ``reload`` event (kept,
restarted, added, removed), and start the new preload.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import trio

from llama_swap_trio.config import ConfigError, load_config
from llama_swap_trio.config.model import Config, ServerConfig
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.generation import Dispatcher, Generation, Runtime
from llama_swap_trio.reload_plan import plan_reload
from llama_swap_trio.reload_server import log_server_changes, server_changes

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


def _invalid(problems: list[str]) -> dict[str, object]:
    return {"type": "reload", "ok": False, "errors": problems}


class Reloader:
    """Switches the daemon to the configuration in the file (see the module docstring).

    Args:
        path: the config file.
        dispatcher: its ``current`` generation is the one replaced.
        runtime: the daemon's models, switched by :meth:`~.generation.Runtime.apply`.
        nursery: where triggered reloads run.
        bus: for the fresh ``snapshot`` and the ``reload`` event.
        new_generation: builds the app of a configuration.
        apply_logging: re-applies ``log_level`` / ``log_to_stdout`` (and the feed's redaction).
        shutting_down: once true, reloads are refused.
    """

    def __init__(
        self,
        path: str,
        *,
        dispatcher: Dispatcher,
        runtime: Runtime,
        nursery: trio.Nursery,
        bus: EventBus,
        new_generation: Callable[[Config], Generation],
        apply_logging: Callable[[Config], None],
        shutting_down: Callable[[], bool],
    ) -> None:
        self._path = path
        self._dispatcher = dispatcher
        self._runtime = runtime
        self._nursery = nursery
        self._bus = bus
        self._new_generation = new_generation
        self._apply_logging = apply_logging
        self._shutting_down = shutting_down
        self._lock = trio.Lock()
        #: a triggered reload is pending or running
        self._triggered = False
        #: the ``[server]`` settings the listener runs with: the first generation's (a reload
        #: never changes them, reload_server.py); known at the first reload
        self._listener: ServerConfig | None = None

    def trigger(self, why: str) -> None:
        """Start a reload in the background, unless one is under way. Non-blocking."""
        if self._shutting_down():
            log.info("%s: not reloading, the daemon is shutting down", why)
            return
        if self._triggered or self._lock.locked():
            log.warning("%s: reload dropped, another reload is under way", why)
            return
        self._triggered = True
        self._nursery.start_soon(self._triggered_reload, why, name="config reload")

    async def _triggered_reload(self, why: str) -> None:
        try:
            await self.reload(why)
        finally:
            self._triggered = False

    async def reload(self, why: str = "POST /api/config/reload") -> dict[str, object]:
        """Reload now (after one under way) and return the outcome: the ``reload`` event."""
        async with self._lock:
            if self._shutting_down():
                return _invalid(["the daemon is shutting down"])
            try:
                return await self._reload(why)
            except Exception as error:  # a bug in switching must not take the daemon down
                log.exception("reload failed: still serving the previous configuration")
                return _invalid([f"reload failed: {type(error).__name__}: {error}"])

    async def _reload(self, why: str) -> dict[str, object]:
        old = self._dispatcher.current
        assert old is not None
        log.info("%s: reloading %s", why, self._path)

        def load(pinned: Mapping[str, int]) -> Config:
            return load_config(self._path, pinned_ports=pinned)

        try:
            config, plan = await trio.to_thread.run_sync(plan_reload, old.config, load)
        except ConfigError as error:
            for problem in error.problems:
                log.warning("%s", problem)
            log.warning(
                "configuration not reloaded (%d problem(s) above): still serving the previous one",
                len(error.problems),
            )
            outcome = _invalid(list(error.problems))
            self._bus.publish(outcome)
            return outcome
        await self._runtime.apply(config, plan)
        new = self._new_generation(config)
        # The switch: from here on, every new request reaches the new configuration's app.
        self._dispatcher.current = new
        old.retire(keys_changed=set(config.api_keys) != set(old.config.api_keys))
        self._apply_logging(config)
        log.info(
            "configuration %d loaded: %s",
            new.number,
            "; ".join(
                f"{label}: {', '.join(ids) or '-'}"
                for label, ids in (
                    ("kept", plan.kept),
                    ("restarted", plan.restarted),
                    ("added", plan.added),
                    ("removed", plan.removed),
                )
            ),
        )
        if self._listener is None:
            self._listener = old.config.server
        listener = self._listener
        log_server_changes(
            server_changes(
                listener, old.config.server, config.server, tls_from_flags=listener.tls_from_flags
            )
        )
        self._bus.publish(new.snapshot_message())
        outcome = plan.as_event()
        self._bus.publish(outcome)
        self._runtime.start_preload(config)
        return outcome
