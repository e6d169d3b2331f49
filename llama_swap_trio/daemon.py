"""The daemon: builds the nursery tree of ARCHITECTURE.md from a Config and runs it.

::

    daemon nursery
    ├── signal watcher        first SIGINT/SIGTERM: graceful shutdown; second: no more waiting;
    │                         SIGHUP: reload the configuration, unless the daemon's terminal
    │                         hung up (hangup.py): then as SIGTERM
    ├── config file watcher   with --watch-config: polls the file, reloads when it changed
    ├── generations nursery   the Runtime (generation.py): every Upstream, the router, the
    │                         connection pool and preload, for the daemon's whole life; a reload
    │                         switches its models (kept ones keep running) and the dispatcher to
    │                         the new configuration's app, a Generation (reload.py)
    └── HTTP server           edge/server.py (plain requests; hypercorn for the rest) serves the
                              Dispatcher: every new request goes to the current generation's
                              app; handlers reach the router through memory channels

The listen address, the process guard, the event bus and the log buffers live as long as the
daemon; everything a configuration decides lives in its generation.

Shutdown order (SPEC section 1): stop accepting and answer every waiting request with 503
(``router.begin_shutdown``), close the event bus (feed connections flush and close with 1001 at
once, so they never hold the drain up), let in-flight responses finish for up to
``GRACEFUL_SECONDS``, then cancel the generations nursery: each Upstream's shielded teardown stops
its process group, in every generation, retiring or current. A second signal skips the drain and
SIGKILLs every upstream group at once. The process guard (watchdog and state file) makes sure
upstreams die with the daemon even when it is SIGKILLed.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial

import trio

from llama_swap_trio.config.model import Config, ServerConfig
from llama_swap_trio.edge import server
from llama_swap_trio.edge.handoff import hypercorn_config
from llama_swap_trio.edge.tls import TLSFileError, server_context
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import FeedLogHandler, Redactor
from llama_swap_trio.generation import Dispatcher, Generation, Runtime, Shared
from llama_swap_trio.hangup import HangupDetector
from llama_swap_trio.http.asgi import ASGIApp
from llama_swap_trio.http.browser_safety import is_loopback_name
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.observe import Observability
from llama_swap_trio.observe.activity import ActivityStoreError, Store, open_store
from llama_swap_trio.reload import Reloader, watch_config_file
from llama_swap_trio.routing.api import RouterSnapshot
from llama_swap_trio.upstream.guard import GuardError, open_process_guard, state_file_path

log = logging.getLogger("llama_swap_trio")

#: how long in-flight responses may run on after a shutdown signal (SPEC section 1)
GRACEFUL_SECONDS = 5.0

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}


class DaemonError(Exception):
    """A fatal error with a message for the user (exit status 1)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ``:PORT`` -> ("", port), every
    interface, IPv4 and IPv6 (edge/listen.py).

    Raises:
        ValueError: with a message saying what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or host == "[]":
        raise ValueError(f"expected HOST:PORT or :PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return host, port


class _BufferHandler(logging.Handler):
    def __init__(self, buffer: LogBuffer) -> None:
        super().__init__()
        self._buffer = buffer

    def emit(self, record: logging.LogRecord) -> None:
        self._buffer.append(self.format(record))


def _setup_logging(
    config: Config, level_name: str | None, proxy_logs: LogBuffer, feed: FeedLogHandler
) -> None:
    level = _LEVELS.get(level_name or config.log_level, logging.ERROR)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the feed gets the proxy log too (SPEC 5 ``log`` messages, source "proxy")
    handlers: list[logging.Handler] = [_BufferHandler(proxy_logs), feed]
    if config.log_to_stdout in ("proxy", "both"):
        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setFormatter(formatter)
    log.handlers[:] = handlers
    log.setLevel(level)
    log.propagate = False


async def _watch_signals(
    on_first: Callable[[], None],
    on_second: Callable[[], None],
    on_hangup: Callable[[], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    hangup = HangupDetector()  # before the receiver: it replaces an ignored SIGHUP (nohup)
    # The receiver stays open for the daemon's whole life, so a second Ctrl-C is a signal we
    # handle, not a KeyboardInterrupt (research/python-stack.md 1.4).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        first = True
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP and not hangup.terminal_hung_up():
                on_hangup()
            elif first:
                if signum == signal.SIGHUP:
                    name = "SIGHUP: the terminal is gone"
                log.info("%s: shutting down", name)
                on_first()
                first = False
            else:
                log.warning("%s again: stopping now", name)
                on_second()


async def _serve_http(
    app: ASGIApp,
    address: tuple[str, int],
    settings: ServerConfig,
    graceful: trio.Event,
    forced: trio.CancelScope,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The HTTP server (edge/server.py) with the ``[server]`` settings; returns after
    ``graceful`` once in-flight responses are done (or cut at the graceful timeout), at once when
    ``forced`` is cancelled. Started with the bound URLs.

    Raises:
        DaemonError: the TLS files cannot be used (any more: the config check loaded them).
    """
    host, port = address
    tls = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        try:
            tls = server_context(settings.tls_cert_file, settings.tls_key_file)
        except TLSFileError as error:
            raise DaemonError(str(error)) from None
    try:
        with forced:
            await server.serve(
                app,
                hypercorn_config(settings, GRACEFUL_SECONDS),
                host,
                port,
                shutdown_trigger=graceful.wait,
                server=settings,
                tls=tls,
                task_status=task_status,
            )
    finally:
        done.set()


async def serve(
    config: Config,
    host: str,
    port: int,
    *,
    log_level: str | None = None,
    watch_config: bool = False,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until a shutdown signal. ``task_status.started(url)`` once listening."""
    bus = EventBus()
    graceful = trio.Event()
    forced = trio.CancelScope()
    served = trio.Event()
    proxy_logs = LogBuffer()

    def apply_logging(config: Config) -> None:
        feed = FeedLogHandler(bus, Redactor(config.api_keys))
        _setup_logging(config, log_level, proxy_logs, feed)

    apply_logging(config)
    dispatcher = Dispatcher()
    reloader: Reloader | None = None

    def current_snapshot() -> RouterSnapshot | None:
        return dispatcher.current.router.snapshot() if dispatcher.current is not None else None

    store = _open_activity_store(config)
    observe = Observability(
        bus, current_snapshot, max_entries=config.activity.max_entries, store=store
    )

    async with open_process_guard(state_file_path(config.path)) as guard:
        shared = Shared(
            bus, guard, proxy_logs, LogBuffer(), {}, graceful.is_set, observe, listen_host=host
        )
        async with trio.open_nursery() as root:
            # progress ticks and the activity writer; last to stop, so the last requests are kept
            await root.start(observe.run)

            def begin_shutdown() -> None:
                if dispatcher.current is not None:
                    router = dispatcher.current.router
                    in_flight = sum(m.in_flight for m in router.snapshot().models)
                    if in_flight and not graceful.is_set():
                        # say it now: the wait that follows is otherwise 5 s of silence
                        log.info(
                            "waiting up to %g s for %d in-flight responses",
                            GRACEFUL_SECONDS,
                            in_flight,
                        )
                    router.begin_shutdown()
                # feed connections flush and close (1001) now, so they never hold up the drain
                bus.close()
                graceful.set()

            def stop_now() -> None:
                begin_shutdown()
                guard.kill_all()
                forced.cancel()

            def reload(why: str) -> None:
                if reloader is None:
                    log.warning("%s: not reloading, the daemon is still starting", why)
                else:
                    reloader.trigger(why)

            await root.start(_watch_signals, begin_shutdown, stop_now, partial(reload, "SIGHUP"))
            async with trio.open_nursery() as generations:
                numbers = itertools.count(1)
                runtime = Runtime(config, shared)
                await generations.start(runtime.run)

                def new_generation(config: Config) -> Generation:
                    return Generation(next(numbers), config, runtime, shared)

                dispatcher.current = new_generation(config)
                try:
                    urls = await root.start(
                        _serve_http,
                        dispatcher,
                        (host, port),
                        config.server,
                        graceful,
                        forced,
                        served,
                    )
                except OSError as error:
                    if error.errno == errno.EADDRINUSE:
                        raise DaemonError(
                            f"cannot listen on {host}:{port}: the address is already in use"
                        ) from None
                    raise DaemonError(f"cannot listen on {host}:{port}: {error}") from None
                url = urls[0]
                log.info("listening on %s", url)
                if not config.api_keys and not is_loopback_name(host):
                    log.warning(
                        "listening beyond loopback (%s) with no api_keys: anyone on the network "
                        "can use the models",
                        host or "every interface",
                    )
                task_status.started(url)
                reloader = Reloader(
                    config.path,
                    dispatcher=dispatcher,
                    runtime=runtime,
                    nursery=generations,
                    bus=bus,
                    new_generation=new_generation,
                    apply_logging=apply_logging,
                    shutting_down=graceful.is_set,
                )
                shared.reload = reloader.reload
                if watch_config:
                    log.info("watching %s for changes", config.path)
                    root.start_soon(
                        watch_config_file, config.path, partial(reload, "config file changed")
                    )
                runtime.start_preload(config)
                await served.wait()

                dispatcher.current.router.begin_shutdown()
                log.info("stopping upstreams")
                generations.cancel_scope.cancel()
            bus.close()
            root.cancel_scope.cancel()
    log.info("stopped")


def _open_activity_store(config: Config) -> Store | None:
    """The ``activity.db`` database, when configured (a startup error when it is unusable)."""
    if config.activity.db is None:
        return None
    try:
        return open_store(config.activity.db, config.activity.max_entries)
    except ActivityStoreError as error:
        raise DaemonError(str(error)) from None


def _path_with_interpreter_dir() -> None:
    """Let ``cmd`` find commands installed beside our Python (a venv that is not activated)."""
    bindir = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bindir and bindir not in parts:
        os.environ["PATH"] = os.pathsep.join([*(p for p in parts if p), bindir])


def run(
    config: Config,
    host: str,
    port: int,
    *,
    log_level: str | None = None,
    watch_config: bool = False,
) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM.

    Raises:
        DaemonError: a fatal problem the user must fix (e.g. the address is in use).
    """
    _path_with_interpreter_dir()
    try:
        trio.run(partial(serve, config, host, port, log_level=log_level, watch_config=watch_config))
    except* DaemonError as group:
        raise group.exceptions[0] from None
    except* GuardError as group:
        raise DaemonError(str(group.exceptions[0])) from None
