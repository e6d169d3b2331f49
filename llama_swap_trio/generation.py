"""The daemon's models across reloads (:class:`Runtime`), and one configuration's app
(:class:`Generation`).

::

    generations nursery (the daemon's; lives as long as the daemon)
    └── Runtime.run                     the one set of models, for the daemon's whole life
        ├── Upstream.run per model      each in its own cancel scope: retiring one model's
        │                               process (a reload changed or removed it) ends only it
        ├── Router.run                  the one router: its state (ready, in flight, queue)
        │                               survives every reload
        ├── burials                     per reload: wait for its retired processes, then end
        │                               their tasks and open the start gate of what replaced them
        └── preload                     hooks.on_startup.preload, in order

A :class:`Generation` is one configuration's app (routes, aliases, filters, keys) over that
runtime; the :class:`Dispatcher` hands every new request to the current one. A reload
(reload.py, SPEC 6.4) calls :meth:`Runtime.apply` with the new configuration and its
:class:`~.reload_plan.ReloadPlan`:

- kept models keep their Upstream (process, streams, ``${PORT}``); it takes their other settings
  at once (:meth:`Upstream.reconfigure`), and the router decides with the new config from then on;
- restarted and added models get a new Upstream whose start waits for the *start gate*: every
  process this reload retires (and every earlier reload's) is gone, so a new process never shares
  a ``${PORT}`` with an old one that is still stopping;
- the router retires the old Upstreams of restarted and removed models once their requests in
  flight are done (bounded), then the burial ends their tasks (their notices muted first: a
  retired process's ``shutdown`` is no news about the model that replaced it).

Requests in flight on the previous Generation's app run on to their end (they hold their grant);
feed and log streams are cut only when ``api_keys`` changed, so a revoked key does not keep
reading. What outlives every generation (:class:`Shared`): the listen address, the process guard,
the event bus and the log buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping

import attrs
import trio

from llama_swap_trio.config.model import Config, ModelConfig
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import Redactor, upstream_log_event
from llama_swap_trio.http.app import create_app
from llama_swap_trio.http.asgi import ASGIApp, Receive, Scope, Send
from llama_swap_trio.http.events import snapshot_message
from llama_swap_trio.http.logs import STREAM_PREFIX
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.observe import Observability
from llama_swap_trio.reload_plan import ReloadPlan
from llama_swap_trio.routing.router import Router
from llama_swap_trio.upstream.api import LogLine, StateChanged, UpstreamEvent, UpstreamState
from llama_swap_trio.upstream.guard import ProcessGuard
from llama_swap_trio.upstream.measure import Measuring
from llama_swap_trio.upstream.upstream import Upstream

log = logging.getLogger("llama_swap_trio")

#: bound on closing the upstream connections at the daemon's end
POOL_CLOSE_SECONDS = 2.0

#: ``POST /api/config/reload``: runs a reload and returns its outcome (the ``reload`` event)
ReloadHook = Callable[[], Awaitable[Mapping[str, object]]]


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
    #: set by the daemon once it can reload (``POST /api/config/reload``)
    reload: ReloadHook | None = None


class _Notices:
    """Routes upstream notices: state and TTL to the router, output to logs and the feed."""

    def __init__(self, config: Config, shared: Shared) -> None:
        self.router: Router | None = None
        self.pool: ClientPool | None = None
        self._shared = shared
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a reloaded configuration's log settings and keys (for redaction)."""
        self._redact = Redactor(config.api_keys)
        self._echo = config.log_to_stdout in ("upstream", "both")

    def relay(self, event: UpstreamEvent, upstream: Upstream) -> None:
        if isinstance(event, LogLine):
            line = f"[{event.model}] {event.line}"
            self._shared.upstream_logs.append(line)
            if self._echo:
                try:
                    print(line, flush=True)
                except OSError:  # stdout gone (its terminal hung up): the buffers still have it
                    pass
            self._shared.bus.publish(upstream_log_event(event.model, event.line, self._redact))
            return
        if isinstance(event, StateChanged):
            if event.state is UpstreamState.STOPPING and self.pool is not None:
                # Before the stop signal (this notice is synchronous): see ClientPool.retire.
                self.pool.retire(event.model, upstream.generation)
            elif event.state is UpstreamState.STOPPED and event.error:
                log.warning("model %s exited: %s", event.model, event.error)
        if self.router is not None:
            self.router.notify(event)


class _Handle:
    """One Upstream's place in the runtime: its task's scope and its (mutable) notice relay."""

    def __init__(self, notices: _Notices) -> None:
        self._notices = notices
        self.upstream: Upstream | None = None
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.muted = False

    def __call__(self, event: UpstreamEvent) -> None:
        if not self.muted and self.upstream is not None:
            self._notices.relay(event, self.upstream)


async def _preload(router: Router, model_ids: tuple[str, ...]) -> None:
    for model_id in model_ids:
        try:
            await router.load(model_id)
            log.info("preloaded %s", model_id)
        except Exception as error:  # a failed preload is logged, the daemon keeps serving
            log.warning("preload of %s failed: %s", model_id, error)


class Runtime:
    """The daemon's upstreams, router and connection pool, across reloads (module docstring).

    Start it with ``await nursery.start(runtime.run)``; ``router`` exists from then on. ``run``
    returns only when cancelled (the daemon's shutdown), after every process is gone.
    """

    def __init__(self, config: Config, shared: Shared) -> None:
        self.config = config
        self._shared = shared
        self.pool = ClientPool()
        self._notices = _Notices(config, shared)
        self._upstreams: dict[str, Upstream] = {}
        self._handles: dict[Upstream, _Handle] = {}
        #: set once every process retired so far is gone (None: nothing was ever retired)
        self._gate: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._router: Router | None = None
        self._measuring: Measuring | None = None

    @property
    def router(self) -> Router:
        assert self._router is not None, "the runtime has not started"
        return self._router

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the first configuration's models and the router until cancelled."""
        config = self.config
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for model_id, model in config.models.items():
                    self._upstreams[model_id] = await self._start_upstream(model, config)
                self._measuring = Measuring(nursery, config.path, self._pid_of, self._shared.bus)
                measured = self._measuring.configure(config.models)
                self._router = router = Router(
                    config, self._upstreams, bus=self._shared.bus, measured=measured
                )
                self._notices.router, self._notices.pool = router, self.pool
                await nursery.start(router.run)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(POOL_CLOSE_SECONDS):
                await self.pool.aclose()

    def _pid_of(self, model_id: str) -> int | None:
        upstream = self._upstreams.get(model_id)
        return upstream.pid if upstream is not None else None

    async def apply(self, config: Config, plan: ReloadPlan) -> None:
        """Switch the models to a reloaded configuration (see the module docstring)."""
        assert self._nursery is not None, "the runtime is not running"
        assert self._measuring is not None
        self.config = config
        self._notices.configure(config)
        self._measuring.configure(config.models)
        previous_gate = self._gate
        gate = self._gate = trio.Event()
        retired = {m: self._upstreams.pop(m) for m in (*plan.restarted, *plan.removed)}
        fresh: dict[str, Upstream] = {}
        for model_id in (*plan.added, *plan.restarted):
            old = retired.get(model_id)
            fresh[model_id] = await self._start_upstream(
                config.models[model_id],
                config,
                gate=gate,
                generation=old.generation if old is not None else 0,
            )
        for model_id in plan.kept:
            self._upstreams[model_id].reconfigure(
                config.models[model_id], health_check_timeout=config.health_check_timeout
            )
        self._upstreams.update(fresh)
        done = trio.Event()
        self.router.reconfigure(
            config, fresh, restarted=plan.restarted, removed=plan.removed, done=done
        )
        self._nursery.start_soon(self._bury, list(retired.values()), done, previous_gate, gate)

    def start_preload(self, config: Config) -> None:
        """Load ``hooks.on_startup.preload`` in the background (at startup, after a reload)."""
        if config.preload and self._nursery is not None:
            self._nursery.start_soon(_preload, self.router, config.preload)

    async def _start_upstream(
        self,
        model: ModelConfig,
        config: Config,
        *,
        gate: trio.Event | None = None,
        generation: int = 0,
    ) -> Upstream:
        assert self._nursery is not None
        shared = self._shared
        logs = shared.model_logs.setdefault(model.id, LogBuffer())
        handle = _Handle(self._notices)
        upstream = handle.upstream = Upstream(
            model,
            health_check_timeout=config.health_check_timeout,
            notify=handle,
            logs=logs,
            guard=shared.guard,
            start_gate=gate,
            generation=generation,
        )
        self._handles[upstream] = handle
        await self._nursery.start(self._run_upstream, upstream, handle)
        return upstream

    @staticmethod
    async def _run_upstream(
        upstream: Upstream,
        handle: _Handle,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with handle.scope:
                await upstream.run(task_status=task_status)
        finally:
            handle.finished.set()

    async def _bury(
        self,
        retired: list[Upstream],
        done: trio.Event,
        previous_gate: trio.Event | None,
        gate: trio.Event,
    ) -> None:
        """Once the router has stopped the retired upstreams, end their tasks; then open the gate
        (after every earlier reload's gate: their processes may hold the same ports)."""
        await done.wait()
        for upstream in retired:
            handle = self._handles.pop(upstream)
            handle.muted = True
            handle.scope.cancel()
            await handle.finished.wait()
        if previous_gate is not None:
            await previous_gate.wait()
        gate.set()


def _outlives_reload(scope: Scope) -> bool:
    """Feed and log streams: they read only what every generation shares."""
    path: str = scope.get("path", "")
    return path == "/api/events" or path == "/logs/stream" or path.startswith(STREAM_PREFIX)


class Generation:
    """One configuration's app over the runtime (see the module docstring)."""

    def __init__(self, number: int, config: Config, runtime: Runtime, shared: Shared) -> None:
        self.number = number
        self.config = config
        self._runtime = runtime
        self._shared = shared
        #: feed and log streams served by this generation's app (cut when the keys change)
        self._streams: set[trio.CancelScope] = set()
        self.app: ASGIApp = create_app(
            config,
            runtime.router,
            pool=runtime.pool,
            bus=shared.bus,
            proxy_logs=shared.proxy_logs,
            upstream_logs={"": shared.upstream_logs, **shared.model_logs},
            shutting_down=shared.shutting_down,
            observe=shared.observe,
            listen_host=shared.listen_host,
            reload=self._reload_hook(shared),
        )

    @property
    def router(self) -> Router:
        return self._runtime.router

    @staticmethod
    def _reload_hook(shared: Shared) -> ReloadHook:
        async def reload() -> Mapping[str, object]:
            if shared.reload is None:
                return {"type": "reload", "ok": False, "errors": ["the daemon is starting"]}
            return await shared.reload()

        return reload

    def retire(self, *, keys_changed: bool = False) -> None:
        """A reload replaced this configuration. Non-blocking.

        Args:
            keys_changed: ``api_keys`` differ in the new configuration: cut feed and log streams
                now, so a client whose key was revoked does not keep reading.
        """
        if keys_changed:
            for stream in self._streams:
                stream.cancel()

    def snapshot_message(self) -> dict[str, object]:
        """The feed's ``snapshot`` for this generation (published after a reload)."""
        return snapshot_message(
            self.config, self.router.snapshot(), self._shared.observe.tracker.open_requests()
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (or websocket) with this generation's app.

        Only feed and log streams, which no upstream ends, get a cancel scope (entering one costs
        ~12 us), so a change of ``api_keys`` can cut them.
        """
        if _outlives_reload(scope):
            with trio.CancelScope() as stream:
                self._streams.add(stream)
                try:
                    await self.app(scope, receive, send)
                finally:
                    self._streams.discard(stream)
            return
        await self.app(scope, receive, send)


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
