"""A *generation*: everything one configuration runs, and how a reload replaces it.

::

    generations nursery (the daemon's; lives as long as the daemon)
    ├── Generation 1 nursery            retiring: no new requests; drains, then stops its upstreams
    │   ├── Upstream.run per model      each model's processes (their own cancel scopes)
    │   ├── Router.run                  owns the swaps nursery
    │   └── preload                     hooks.on_startup.preload, in order
    └── Generation 2 nursery            current: the Dispatcher hands it every new request
        └── ... (the same; its Upstreams spawn nothing before generation 1's ``stopped`` is set)

What stays for the daemon's whole life, across generations (:class:`Shared`): the listen address
(hypercorn serves the :class:`Dispatcher`), the process guard, the event bus and the log buffers.

Retirement (``retire``): the router refuses its waiting and queued requests with 503
``config_reloaded`` (``Retry-After: 1``); requests already in flight on this generation may run on
for up to :data:`DRAIN_SECONDS`; then the connection pool is closed and the nursery cancelled, so
every Upstream's shielded, bounded teardown stops its process group (which ends any request still
running on it).
``stopped`` is set once this generation's processes *and every earlier generation's* are gone.
The next generation's Upstreams wait for it before they spawn anything, so a ``${PORT}`` is never
shared by an old process that is still stopping and a new one (llama-swap's reload can do that).

Feed and log streams (``/api/events``, ``/logs/stream...``) do not hold a retirement up: they only
read the bus and the log buffers, which stay. They are cut only when ``api_keys`` changed, so a
revoked key does not keep reading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping

import attrs
import trio

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import Redactor, upstream_log_event
from llama_swap_trio.http.app import create_app
from llama_swap_trio.http.asgi import ASGIApp, Receive, Scope, Send
from llama_swap_trio.http.events import snapshot_message
from llama_swap_trio.http.logs import STREAM_PREFIX
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.observe import Observability
from llama_swap_trio.routing.router import Router
from llama_swap_trio.upstream.api import LogLine, StateChanged, UpstreamEvent, UpstreamState
from llama_swap_trio.upstream.guard import ProcessGuard
from llama_swap_trio.upstream.measure import start_measuring
from llama_swap_trio.upstream.upstream import Upstream

log = logging.getLogger("llama_swap_trio")

#: how long in-flight responses of a retiring generation may run on (as for a shutdown, SPEC 1)
DRAIN_SECONDS = 5.0
#: bound on closing a retiring generation's upstream connections
POOL_CLOSE_SECONDS = 2.0


@attrs.define(eq=False)
class Shared:
    """What every generation uses and none owns: it outlives them all."""

    bus: EventBus
    #: None only in tests that start no process
    guard: ProcessGuard | None
    proxy_logs: LogBuffer
    #: every model's output in arrival order (the ``/logs`` views' combined buffer)
    upstream_logs: LogBuffer
    #: one buffer per model id ever configured: a model's history survives reloads
    model_logs: MutableMapping[str, LogBuffer]
    #: true once the daemon is stopping
    shutting_down: Callable[[], bool]
    #: the request tracker, metrics and history (ids and counts span reloads)
    observe: Observability = attrs.field(
        default=attrs.Factory(lambda self: Observability(self.bus), takes_self=True)
    )
    #: the host the daemon listens on (the app's Host rule); None when no daemon listens
    listen_host: str | None = None


class _Notices:
    """Routes upstream notices: state and TTL to the router, output to logs and the feed."""

    def __init__(self, config: Config, shared: Shared) -> None:
        self.router: Router | None = None
        self.pool: ClientPool | None = None
        self._shared = shared
        self._redact = Redactor(config.api_keys)
        self._echo = config.log_to_stdout in ("upstream", "both")

    def __call__(self, event: UpstreamEvent) -> None:
        if isinstance(event, LogLine):
            line = f"[{event.model}] {event.line}"
            self._shared.upstream_logs.append(line)
            if self._echo:
                print(line, flush=True)
            self._shared.bus.publish(upstream_log_event(event.model, event.line, self._redact))
            return
        if isinstance(event, StateChanged):
            if event.state is UpstreamState.STOPPING and self.router and self.pool:
                # Before the stop signal (this notice is synchronous): see ClientPool.retire.
                self.pool.retire(event.model, self.router.upstream(event.model).generation)
            elif event.state is UpstreamState.STOPPED and event.error:
                log.warning("model %s exited: %s", event.model, event.error)
        if self.router is not None:
            self.router.notify(event)


async def _preload(router: Router, model_ids: tuple[str, ...]) -> None:
    for model_id in model_ids:
        try:
            await router.load(model_id)
            log.info("preloaded %s", model_id)
        except Exception as error:  # a failed preload is logged, the daemon keeps serving
            log.warning("preload of %s failed: %s", model_id, error)


def _outlives_reload(scope: Scope) -> bool:
    """Feed and log streams: they read only what every generation shares."""
    path: str = scope.get("path", "")
    return path == "/api/events" or path == "/logs/stream" or path.startswith(STREAM_PREFIX)


class Generation:
    """One configuration's upstreams, router, connection pool and app (see the module docstring).

    Start it with ``await nursery.start(generation.run)``; ``router`` and ``app`` exist from then
    on. ``run`` returns after :meth:`retire` once everything it owns has stopped.
    """

    def __init__(
        self, number: int, config: Config, shared: Shared, *, previous: Generation | None
    ) -> None:
        self.number = number
        self.config = config
        self._shared = shared
        #: set when this generation's processes and those of every earlier one are gone
        self.stopped = trio.Event()
        self._gate = previous.stopped if previous is not None else None
        self._retire = trio.Event()
        self._keys_changed = False
        self._nursery: trio.Nursery | None = None
        self._router: Router | None = None
        self._app: ASGIApp | None = None
        #: requests in flight on this generation (feed and log streams aside)
        self._in_flight = 0
        #: feed and log streams served by this generation's app (they outlive it)
        self._streams: set[trio.CancelScope] = set()
        #: while retiring: set when the last request in flight is done
        self._drained: trio.Event | None = None

    @property
    def router(self) -> Router:
        assert self._router is not None, "the generation has not started"
        return self._router

    @property
    def app(self) -> ASGIApp:
        assert self._app is not None, "the generation has not started"
        return self._app

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Build and run this generation until it is retired (or cancelled with the daemon)."""
        config, shared = self.config, self._shared
        for model_id in config.models:
            shared.model_logs.setdefault(model_id, LogBuffer())
        notices = _Notices(config, shared)
        pool = ClientPool()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                upstreams = {
                    model_id: Upstream(
                        model,
                        health_check_timeout=config.health_check_timeout,
                        notify=notices,
                        logs=shared.model_logs[model_id],
                        guard=shared.guard,
                        start_gate=self._gate,
                    )
                    for model_id, model in config.models.items()
                }
                for upstream in upstreams.values():
                    await nursery.start(upstream.run)
                measured = start_measuring(
                    nursery, config.path, config.models, lambda m: upstreams[m].pid, shared.bus
                )
                self._router = router = Router(config, upstreams, bus=shared.bus, measured=measured)
                notices.router, notices.pool = router, pool
                await nursery.start(router.run)
                self._app = create_app(
                    config,
                    router,
                    pool=pool,
                    bus=shared.bus,
                    proxy_logs=shared.proxy_logs,
                    upstream_logs={"": shared.upstream_logs, **shared.model_logs},
                    shutting_down=shared.shutting_down,
                    observe=shared.observe,
                    listen_host=shared.listen_host,
                )
                task_status.started()

                await self._retire.wait()
                router.begin_shutdown(errors.config_reloaded)
                await self._drain()
                with trio.CancelScope(shield=True), trio.move_on_after(POOL_CLOSE_SECONDS):
                    await pool.aclose()
                log.info("configuration %d: stopping its upstreams", self.number)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(POOL_CLOSE_SECONDS):
                await pool.aclose()  # idempotent; here for the daemon's shutdown path
        if self._gate is not None:
            await self._gate.wait()  # an earlier generation may still be stopping
        self.stopped.set()

    def start_preload(self) -> None:
        """Load ``hooks.on_startup.preload`` in the background (after the switch to this one)."""
        if self.config.preload and self._nursery is not None:
            self._nursery.start_soon(_preload, self.router, self.config.preload)

    def retire(self, *, keys_changed: bool = False) -> None:
        """Stop taking part: drain, then stop everything (``run`` returns). Non-blocking.

        Args:
            keys_changed: ``api_keys`` differ in the new configuration: cut feed and log streams
                now, so a client whose key was revoked does not keep reading.
        """
        self._keys_changed = keys_changed
        self._retire.set()

    def snapshot_message(self) -> dict[str, object]:
        """The feed's ``snapshot`` for this generation (published after a reload)."""
        return snapshot_message(
            self.config, self.router.snapshot(), self._shared.observe.tracker.open_requests()
        )

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (or websocket) with this generation's app, counted for the drain.

        A plain counter, not a cancel scope per request: entering a CancelScope costs ~12 us,
        and a request still running when the drain ends is cut anyway, by its upstream stopping
        under it (its pooled connection is closed first). Only feed and log streams, which no
        upstream ends, get a scope, so a change of ``api_keys`` can cut them.
        """
        if _outlives_reload(scope):
            with trio.CancelScope() as stream:
                self._streams.add(stream)
                try:
                    await self.app(scope, receive, send)
                finally:
                    self._streams.discard(stream)
            return
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._drained is not None:
                self._drained.set()

    async def _drain(self) -> None:
        """Let requests in flight finish (bounded); the upstreams stop under those left."""
        if self._keys_changed:
            for stream in self._streams:
                stream.cancel()
        if self._in_flight:
            self._drained = trio.Event()
            log.info(
                "configuration %d: waiting up to %g s for %d request(s) in flight",
                self.number,
                DRAIN_SECONDS,
                self._in_flight,
            )
            with trio.move_on_after(DRAIN_SECONDS):
                await self._drained.wait()
        if self._in_flight:
            log.warning(
                "configuration %d: %d request(s) still in flight are cut: their upstreams stop",
                self.number,
                self._in_flight,
            )


class Dispatcher:
    """The daemon's one ASGI entry point: each new request goes to the current generation.

    Switching is one assignment, so a request is always served whole by the generation that was
    current when it arrived.
    """

    def __init__(self) -> None:
        self.current: Generation | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = self.current
        assert generation is not None, "the daemon serves only once a generation runs"
        if scope["type"] == "lifespan":
            await generation.app(scope, receive, send)
        else:
            await generation.handle(scope, receive, send)
