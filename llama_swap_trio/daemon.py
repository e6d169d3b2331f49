"""The daemon: builds the nursery tree of ARCHITECTURE.md from a Config and runs it.

::

    daemon nursery
    ├── signal watcher        first SIGINT/SIGTERM: graceful shutdown; second: no more waiting
    ├── upstreams nursery     one Upstream.run task per model (its process lives in there), and
    │                         the router task (which owns the swaps nursery)
    ├── hypercorn serve       the ASGI app; handlers reach the router through memory channels
    └── preload               hooks.on_startup.preload, in order, after the listener is up

Shutdown order (SPEC section 1): stop accepting and answer every waiting request with 503
(``router.begin_shutdown``), close the event bus (feed connections flush and close with 1001 at
once, so they never hold the drain up), let in-flight responses finish for up to
``GRACEFUL_SECONDS``, then cancel the upstreams nursery: each Upstream's shielded teardown stops
its process group. A second signal skips the drain and SIGKILLs every upstream group at once. The
process guard (watchdog and state file) makes sure upstreams die with the daemon even when it is
SIGKILLed.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from llama_swap_trio.config.model import Config
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import FeedLogHandler, Redactor, upstream_log_event
from llama_swap_trio.http import hypercorn_patch
from llama_swap_trio.http.app import create_app
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.routing.router import Router
from llama_swap_trio.upstream.api import LogLine, StateChanged, UpstreamEvent, UpstreamState
from llama_swap_trio.upstream.guard import GuardError, open_process_guard, state_file_path
from llama_swap_trio.upstream.upstream import Upstream

log = logging.getLogger("llama_swap_trio")

#: how long in-flight responses may run on after a shutdown signal (SPEC section 1)
GRACEFUL_SECONDS = 5.0

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}


class DaemonError(Exception):
    """A fatal error with a message for the user (exit status 1)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port).

    Raises:
        ValueError: with a message saying what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
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


class _Notices:
    """Routes upstream notices: state and TTL to the router, output to logs and the feed."""

    def __init__(
        self, config: Config, bus: EventBus, upstream_logs: LogBuffer, redact: Redactor
    ) -> None:
        self.router: Router | None = None
        # (model, generation) of upstreams that stopped, for _close_stopped_clients
        self.stopped_send, self.stopped_receive = trio.open_memory_channel[tuple[str, int]](
            math.inf
        )
        self._bus = bus
        self._redact = redact
        self._upstream_logs = upstream_logs
        self._echo = config.log_to_stdout in ("upstream", "both")

    def __call__(self, event: UpstreamEvent) -> None:
        if isinstance(event, LogLine):
            line = f"[{event.model}] {event.line}"
            self._upstream_logs.append(line)
            if self._echo:
                print(line, flush=True)
            self._bus.publish(upstream_log_event(event.model, event.line, self._redact))
            return
        if isinstance(event, StateChanged) and event.state is UpstreamState.STOPPED:
            if event.error:
                log.warning("model %s exited: %s", event.model, event.error)
            if self.router is not None:
                generation = self.router.upstream(event.model).generation
                self.stopped_send.send_nowait((event.model, generation))
        if self.router is not None:
            self.router.notify(event)


async def _close_stopped_clients(
    pool: ClientPool, stopped: trio.MemoryReceiveChannel[tuple[str, int]]
) -> None:
    """Close the pooled connections of upstreams that stopped.

    Their sockets would otherwise sit in CLOSE-WAIT until the model starts again, one file
    descriptor each. Only generations up to the stopped one are closed: by the time this runs the
    model may already be serving from a new process.
    """
    async for model_id, generation in stopped:
        await pool.close_model(model_id, up_to=generation)


async def _watch_signals(
    on_first: Callable[[], None],
    on_second: Callable[[], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The receiver stays open for the daemon's whole life, so a second Ctrl-C is a signal we
    # handle, not a KeyboardInterrupt (research/python-stack.md 1.4).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        first = True
        async for signum in signals:
            name = signal.Signals(signum).name
            if first:
                log.info("%s: shutting down", name)
                on_first()
                first = False
            else:
                log.warning("%s again: stopping now", name)
                on_second()


async def _preload(router: Router, model_ids: tuple[str, ...]) -> None:
    for model_id in model_ids:
        try:
            await router.load(model_id)
            log.info("preloaded %s", model_id)
        except Exception as error:  # a failed preload is logged, the daemon keeps serving
            log.warning("preload of %s failed: %s", model_id, error)


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    hypercorn_patch.install()  # closed client connections must not linger (see the module)
    hc = HypercornConfig()
    bracketed = f"[{host}]" if ":" in host else host
    hc.bind = [f"{bracketed}:{port}"]
    hc.graceful_timeout = GRACEFUL_SECONDS
    hc.keep_alive_timeout = 75.0
    hc.backlog = 1024
    hc.accesslog = None
    hc.errorlog = logging.getLogger("llama_swap_trio.hypercorn")
    # Upstream responses carry their own; we strip theirs, so keep hypercorn's single copy.
    hc.include_server_header = False
    # No server pings: hypercorn's ping task sleeps out its interval after the websocket has
    # closed, and the graceful drain waits for it, so any websocket (a feed client, a tunnel) in
    # the last interval held every shutdown for the full GRACEFUL_SECONDS (measured 5.3 s instead
    # of 0.3 s). A vanished feed client costs one bounded buffer until a send fails.
    hc.websocket_ping_interval = None
    return hc


async def _serve_http(
    app: ASGIApp,
    hc: HypercornConfig,
    graceful: trio.Event,
    forced: trio.CancelScope,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's serve; returns after ``graceful`` once in-flight responses are done (or cut at
    the graceful timeout), at once when ``forced`` is cancelled. Started with the bound URLs."""
    try:
        with forced:
            await hypercorn_serve(
                cast(Any, app), hc, shutdown_trigger=graceful.wait, task_status=task_status
            )
    finally:
        done.set()


async def serve(
    config: Config,
    host: str,
    port: int,
    *,
    log_level: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until a shutdown signal. ``task_status.started(url)`` once listening."""
    proxy_logs = LogBuffer()
    upstream_logs = LogBuffer()
    model_logs: Mapping[str, LogBuffer] = {model_id: LogBuffer() for model_id in config.models}
    bus = EventBus()
    redact = Redactor(config.api_keys)
    _setup_logging(config, log_level, proxy_logs, FeedLogHandler(bus, redact))
    notices = _Notices(config, bus, upstream_logs, redact)
    graceful = trio.Event()
    forced = trio.CancelScope()
    served = trio.Event()

    async with open_process_guard(state_file_path(config.path)) as guard:
        async with trio.open_nursery() as root:

            def begin_shutdown() -> None:
                if notices.router is not None:
                    notices.router.begin_shutdown()
                # feed connections flush and close (1001) now, so they never hold up the drain
                bus.close()
                graceful.set()

            def stop_now() -> None:
                begin_shutdown()
                guard.kill_all()
                forced.cancel()

            await root.start(_watch_signals, begin_shutdown, stop_now)
            async with trio.open_nursery() as upstreams_nursery:
                upstreams = {
                    model_id: Upstream(
                        model,
                        health_check_timeout=config.health_check_timeout,
                        notify=notices,
                        logs=model_logs[model_id],
                        guard=guard,
                    )
                    for model_id, model in config.models.items()
                }
                for upstream in upstreams.values():
                    await upstreams_nursery.start(upstream.run)
                router = Router(config, upstreams, bus=bus)
                notices.router = router
                await upstreams_nursery.start(router.run)

                pool = ClientPool()
                root.start_soon(_close_stopped_clients, pool, notices.stopped_receive)
                app = create_app(
                    config,
                    router,
                    pool=pool,
                    bus=bus,
                    proxy_logs=proxy_logs,
                    upstream_logs={"": upstream_logs, **model_logs},
                    shutting_down=graceful.is_set,
                )
                try:
                    urls = await root.start(
                        _serve_http, app, _hypercorn_config(host, port), graceful, forced, served
                    )
                except OSError as error:
                    if error.errno == errno.EADDRINUSE:
                        raise DaemonError(
                            f"cannot listen on {host}:{port}: the address is already in use"
                        ) from None
                    raise DaemonError(f"cannot listen on {host}:{port}: {error}") from None
                url = urls[0]
                log.info("listening on %s", url)
                task_status.started(url)
                if config.preload:
                    root.start_soon(_preload, router, config.preload)
                await served.wait()

                router.begin_shutdown()
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await pool.aclose()
                log.info("stopping upstreams")
                upstreams_nursery.cancel_scope.cancel()
            bus.close()
            root.cancel_scope.cancel()
    log.info("stopped")


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
    if watch_config:
        logging.getLogger("llama_swap_trio").warning("--watch-config is not supported yet")
    try:
        trio.run(partial(serve, config, host, port, log_level=log_level))
    except* DaemonError as group:
        raise group.exceptions[0] from None
    except* GuardError as group:
        raise DaemonError(str(group.exceptions[0])) from None
