"""The router task: the one owner of scheduling state (ARCHITECTURE rules 1-4).

Everything that can change a scheduling decision arrives as a message on one inbox and is handled
by one task, :meth:`Router.run`, which feeds the pure :class:`~.scheduler.Scheduler` and carries out
what it decides:

- handlers (``serve``) post a request with their own reply slot and wait on it; the router
  answers with ``send_nowait`` and never awaits a client. A grant that cannot be delivered (the
  handler is gone) is released at once; leaving ``serve`` posts serve-done, cancelling it posts a
  cancel (which the scheduler treats as serve-done if the grant had already been sent);
- upstream notices (``notify``), load and stop results, unloads and shutdown arrive the same way.

One inbox keeps their order: an upstream's ``stopped`` notice is always handled before the load
result its swap task posts after it. The inbox is unbounded on purpose: every message is a bounded
consequence of a live handler (at most a request and a cancel/serve-done each) or of a load, stop or
state change, and ``notify`` and the exit path of ``serve`` must never block or fail.

Time-based rules (min_residency, the starvation guard, queue timeouts) change a decision only at
the instants ``Scheduler.next_deadline`` names: the router task waits for its next message with
that deadline and calls ``Scheduler.tick`` when it passes (``_rearm`` moves the deadline after
every message, also one handled inline).

Requests that do not hold their model (websockets with ``websockets_hold_model = false``) are
granted but not counted in flight; the router cancels their scopes as soon as the scheduler no
longer sees the model ready (``_close_detached``).

Slow work runs in the swaps nursery, opened by ``run`` and living as long as it: one task per load
(stop the evicted models in parallel, then start the target) and one per stop (TTL, unload). They
report back through the inbox; a client's cancel never reaches them (rule 3).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import trio

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.routing.api import (
    CancelWait,
    Grant,
    ModelStatus,
    Progress,
    ProgressCallback,
    QueueEntry,
    RouterSnapshot,
    WaitCancelled,
)
from llama_swap_trio.routing.backoff import COUNTED_REASONS, Backoff
from llama_swap_trio.routing.memory import Measured, MemorySwapper, with_memory
from llama_swap_trio.routing.plan import Plan, WaitingRequest
from llama_swap_trio.routing.scheduler import Scheduler
from llama_swap_trio.routing.swappers import swapper_for
from llama_swap_trio.upstream.api import (
    IdleExpired,
    LogLine,
    StartFailed,
    StateChanged,
    UpstreamEvent,
    UpstreamLike,
    UpstreamState,
)

log = logging.getLogger(__name__)

Reply = Grant | ProxyError


class _ReplySlot:
    """The one reply to one request: the router fills it, the handler takes it.

    A memory channel per request did the same job at several times the cost, and with a grant
    already in hand (the inline fast path of ``Router._post``) the handler takes it without
    waiting at all. Filling a closed slot (its handler left) raises ``ClosedResourceError``,
    as sending on a closed channel does, so the router releases that grant.
    """

    __slots__ = ("_closed", "_event", "_value")

    def __init__(self) -> None:
        self._value: Reply | None = None
        self._closed = False
        self._event: trio.Event | None = None

    @property
    def value(self) -> Reply | None:
        """The reply, if it came (taken without waiting)."""
        return self._value

    def send_nowait(self, value: Reply) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        if self._value is not None:
            raise trio.WouldBlock
        self._value = value
        if self._event is not None:
            self._event.set()

    async def receive(self) -> Reply:
        """The reply, waiting for it if it has not come yet (only then a checkpoint)."""
        if self._value is None:
            self._event = trio.Event()
            await self._event.wait()
        assert self._value is not None
        return self._value

    def close(self) -> None:
        self._closed = True


@attrs.define(eq=False)
class _Ticket:
    """One load under way, shared by the router and the swap task running it."""

    target: str
    evict: frozenset[str]
    started_at: float
    #: evicted models that must stop although they could sleep (the memory rule's rule 4)
    stop: frozenset[str] = frozenset()
    #: when stopping the evictions was done (the start of the target began)
    stopped_at: float | None = None
    #: set by an unload of the target: the swap task skips the start if it has not begun
    aborted: bool = False
    finished: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class _NewRequest:
    rid: int
    model: str
    reply: _ReplySlot
    on_progress: ProgressCallback | None
    require_ready: bool
    #: an API load or preload, and whether it may evict protected models (scheduler rule 8)
    explicit: bool = False
    force: bool = False
    hold: bool = True


@attrs.frozen
class _Cancel:
    rid: int


@attrs.frozen
class _ServeDone:
    rid: int


@attrs.frozen
class _LoadDone:
    ticket: _Ticket
    error: StartFailed | None
    finished_at: float


@attrs.frozen
class _Unload:
    models: frozenset[str] | None
    reply: trio.MemorySendChannel[list[str]]


@attrs.frozen
class _StopDone:
    models: frozenset[str]
    reply: trio.MemorySendChannel[list[str]] | None


@attrs.frozen
class _Shutdown:
    refusal: Callable[[], ProxyError]


@attrs.frozen
class _BackoffOver:
    model: str


@attrs.frozen
class _Reconfigure:
    config: Config
    upstreams: Mapping[str, UpstreamLike]
    restarted: tuple[str, ...]
    removed: tuple[str, ...]
    done: trio.Event


_Message = (
    _NewRequest
    | _Cancel
    | _ServeDone
    | _LoadDone
    | _Unload
    | _StopDone
    | _Shutdown
    | _Reconfigure
    | _BackoffOver
    | UpstreamEvent
)

#: how long a model a reload changed or removed may finish its requests in flight (SPEC 6.4)
RETIRE_DRAIN_SECONDS = 5.0

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.define
class _Waiter:
    reply: _ReplySlot
    on_progress: ProgressCallback | None


class _Effects:
    """The scheduler's window onto the world (``scheduler.Effects``), run in the router task."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def grant(self, rid: int, model: str, load_seconds: float) -> bool:
        router = self._router
        waiter = router._waiters.pop(rid, None)
        if waiter is None:
            return False
        grant = Grant(router._config.models[model], router._upstreams[model])
        try:
            waiter.reply.send_nowait(grant)
        except (*_GONE, trio.WouldBlock):
            log.debug("request %d for %s left before its grant; released", rid, model)
            return False
        router._tell(waiter, Progress("ready", load_seconds=load_seconds))
        return True

    def refuse(self, rid: int, error: ProxyError) -> None:
        waiter = self._router._waiters.pop(rid, None)
        if waiter is not None:
            try:
                waiter.reply.send_nowait(error)
            except (*_GONE, trio.WouldBlock):
                pass  # the handler is gone: nobody to tell

    def progress(self, rid: int, progress: Progress) -> None:
        waiter = self._router._waiters.get(rid)
        if waiter is not None:
            self._router._tell(waiter, progress)

    def start_load(self, target: str, evict: frozenset[str], explanation: str) -> None:
        self._router._start_load(target, evict, explanation)

    def queue_changed(self, queue: tuple[QueueEntry, ...]) -> None:
        entries = [{"model": e.model, "position": e.position, "reason": e.reason} for e in queue]
        self._router._bus.publish({"type": "queue", "queue": entries})

    def in_flight_changed(self, model: str, count: int) -> None:
        upstream = self._router._upstreams.get(model)
        if upstream is not None:  # None: a reload removed it, its last requests end
            upstream.set_in_flight(count)
        if count <= 0:
            drained = self._router._drained.pop(model, None)
            if drained is not None:
                drained.set()


class _Serving:
    """The async context manager of :meth:`Router.serve`: the grant for the block.

    A small class rather than a generator-based context manager: one is entered per request.
    With the inline fast path of ``Router._post`` the grant is in the slot as soon as the
    request is posted, and the block is entered without waiting, so ``cancel_wait`` (the
    client's disconnect watch) is entered only by a request that really waits.
    """

    __slots__ = ("_cancel_wait", "_request", "_router")

    def __init__(self, router: Router, request: _NewRequest, cancel_wait: CancelWait | None):
        self._router = router
        self._request = request
        self._cancel_wait = cancel_wait

    async def __aenter__(self) -> Grant:
        router, request = self._router, self._request
        if router._closing:
            raise router._refusal()
        slot = request.reply
        try:
            if not router._post(request, inline=True):
                raise router._refusal()
            reply = slot.value
            if reply is None:
                reply = await self._wait(slot)
        finally:
            slot.close()  # a late grant fails and is released by the router
        if isinstance(reply, ProxyError):
            raise reply
        return reply

    async def _wait(self, slot: _ReplySlot) -> Reply:
        try:
            if self._cancel_wait is None:
                return await slot.receive()
            reply: Reply | None = None
            with self._cancel_wait():
                reply = await slot.receive()
            if reply is None:  # the scope caught a cancellation
                raise WaitCancelled
            return reply
        except BaseException:
            # Cancelled while waiting. The router removes us from the queue or load; if the
            # grant was already sent (it may sit in the slot), it counts this as done.
            self._router._post(_Cancel(self._request.rid))
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        if self._request.hold:  # else never counted in flight: nothing to report (rule 14)
            self._router._post(_ServeDone(self._request.rid), inline=True)


class Router:
    """The router (``RouterLike``): start it with ``await nursery.start(router.run)``."""

    def __init__(
        self,
        config: Config,
        upstreams: Mapping[str, UpstreamLike],
        *,
        bus: EventBus,
        measured: Measured | None = None,
    ) -> None:
        """Args:
        measured: the GPU memory measured for ``"measured"`` models (the memory rule reads it).
        """
        self._config = config
        self._upstreams = dict(upstreams)
        self._bus = bus
        self._measured = measured
        self._swapper = with_memory(swapper_for(config), config.models, config.gpu_memory)
        self._scheduler = Scheduler(
            config.models,
            self._swapper,
            _Effects(self),
            clock=trio.current_time,
            starvation_after=config.routing.starvation_after,
        )
        if isinstance(self._swapper, MemorySwapper):
            self._swapper.bind(self._scheduler, measured)
        self._measured = measured
        #: the router task's wait for its next message, bounded by the scheduler's next deadline
        self._timer = trio.CancelScope()
        #: scopes of granted requests that do not hold their model, by model (rule 14)
        self._detached: dict[str, set[trio.CancelScope]] = {}
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[_Message](math.inf)
        self._rids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._tickets: dict[str, _Ticket] = {}
        self._unload_replies: set[trio.MemorySendChannel[list[str]]] = set()
        self._swaps: trio.Nursery | None = None
        self._closing = False
        self._refusal: Callable[[], ProxyError] = errors.shutting_down
        #: messages posted and not yet taken by the router task (see ``_post``)
        self._queued = 0
        #: why each model is being stopped, until its ``stopping`` state is published
        self._stop_reasons: dict[str, str] = {}
        #: crash-loop backoff (SPEC 6.4): consecutive failed starts and cooldowns per model
        self._backoff = Backoff()
        #: set when a model a reload retires has no request in flight any more
        self._drained: dict[str, trio.Event] = {}

    # ------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The router task. Runs until cancelled; on the way out every waiter gets 503."""
        try:
            async with trio.open_nursery() as swaps:
                self._swaps = swaps
                task_status.started()
                while True:
                    with trio.CancelScope() as self._timer:
                        self._rearm()
                        try:
                            message = await self._inbox_recv.receive()
                        except trio.EndOfChannel:  # pragma: no cover - the sender never closes
                            return
                    if self._timer.cancelled_caught:
                        self._scheduler.tick()
                        self._close_detached()
                        continue
                    self._queued -= 1
                    self._handle(message)
        finally:
            self._closing = True
            self._scheduler.shutdown()
            # No await from here on: nothing can be posted between the drain and the close.
            self._answer_leftovers()
            self._inbox_recv.close()  # later posts fail: serve() answers 503 itself
            for reply in self._unload_replies:
                reply.close()

    def notify(self, event: UpstreamEvent) -> None:
        """Upstream notices (wired to each Upstream's ``notify``). Never blocks."""
        if not isinstance(event, LogLine):
            self._post(event)

    def serve(
        self,
        model_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        require_ready: bool = False,
        cancel_wait: CancelWait | None = None,
    ) -> AbstractAsyncContextManager[Grant]:
        return self._serve(model_id, on_progress, require_ready, cancel_wait=cancel_wait)

    def plan(self, model_id: str, *, force: bool = False) -> Plan:
        """What a request for ``model_id`` would get now, and why (no side effects)."""
        if model_id not in self._config.models:
            raise errors.model_not_found(model_id)
        return self._scheduler.plan(model_id, force=force)

    def waiting_requests(self) -> tuple[WaitingRequest, ...]:
        return self._scheduler.waiting_requests()

    @asynccontextmanager
    async def serve_detached(
        self, model_id: str, *, require_ready: bool = False
    ) -> AsyncIterator[Grant]:
        """Like ``serve``, but the request does not hold the model (scheduler rule 14): it is
        not in flight, and the block is cancelled when the model stops."""
        async with self._serve(model_id, None, require_ready, hold=False) as grant:
            scope = trio.CancelScope()
            self._detached.setdefault(model_id, set()).add(scope)
            self._close_detached()  # stopped between the grant and now: cancelled at once
            try:
                with scope:
                    yield grant
            finally:
                holders = self._detached.get(model_id)
                if holders is not None:
                    holders.discard(scope)
                    if not holders:
                        del self._detached[model_id]

    async def load(self, model_id: str, *, force: bool = False) -> None:
        async with self._serve(model_id, None, False, explicit=True, force=force):
            pass

    async def unload(self, model_id: str | None = None) -> list[str]:
        if model_id is not None and model_id not in self._config.models:
            raise errors.model_not_found(model_id)
        send, recv = trio.open_memory_channel[list[str]](1)
        models = None if model_id is None else frozenset({model_id})
        with recv:
            if not self._post(_Unload(models, send)):
                return []
            try:
                return await recv.receive()
            except trio.EndOfChannel:
                return []  # the router stopped first; the daemon tears the processes down

    def snapshot(self) -> RouterSnapshot:
        now = trio.current_time()
        models = tuple(
            ModelStatus(
                model_id,
                UpstreamState.BACKOFF if self._backoff.active(model_id, now) else upstream.state,
                self._scheduler.in_flight(model_id),
            )
            for model_id, upstream in sorted(self._upstreams.items())
        )
        measured = self._measured
        figures = {} if measured is None else {m: measured.measured(m) for m in self._upstreams}
        found = {m: size for m, size in figures.items() if size is not None}
        return RouterSnapshot(models=models, queue=self._scheduler.queue(), measured=found)

    def upstream(self, model_id: str) -> UpstreamLike:
        try:
            return self._upstreams[model_id]
        except KeyError:
            raise errors.model_not_found(model_id) from None

    def reconfigure(
        self,
        config: Config,
        upstreams: Mapping[str, UpstreamLike],
        *,
        restarted: tuple[str, ...],
        removed: tuple[str, ...],
        done: trio.Event,
    ) -> None:
        """A reload (SPEC 6.4): decide with ``config`` from now on. Non-blocking.

        Args:
            upstreams: the new Upstreams of added and restarted models (the others are kept).
            restarted, removed: their current Upstreams are retired: stopped once their requests
                in flight are done (at most :data:`RETIRE_DRAIN_SECONDS`).
            done: set when every retired Upstream has stopped.
        """
        if not self._post(_Reconfigure(config, upstreams, restarted, removed, done)):
            done.set()  # the router is gone: the daemon's teardown ends the processes

    def begin_shutdown(self, refusal: Callable[[], ProxyError] = errors.shutting_down) -> None:
        """From now on refuse everything with 503; waiters are answered at once. Non-blocking.

        Args:
            refusal: makes the error refused requests get: ``shutting_down`` when the daemon
                stops, ``config_reloaded`` when a reload retires this router.
        """
        self._closing = True
        self._refusal = refusal
        self._post(_Shutdown(refusal))

    # ------------------------------------------------------------ handler side

    def _serve(
        self,
        model_id: str,
        on_progress: ProgressCallback | None,
        require_ready: bool,
        *,
        explicit: bool = False,
        force: bool = False,
        hold: bool = True,
        cancel_wait: CancelWait | None = None,
    ) -> _Serving:
        request = _NewRequest(
            next(self._rids), model_id, _ReplySlot(), on_progress, require_ready, explicit, force,
            hold,
        )  # fmt: skip
        return _Serving(self, request, cancel_wait)

    def _post(self, message: _Message, *, inline: bool = False) -> bool:
        """Hand ``message`` to the router task.

        ``inline``: when nothing is waiting in the inbox, handle the message right here in the
        caller's task instead. That is exactly what the router task would do next (``_handle`` is
        synchronous, so nothing can interleave, and with an empty inbox no earlier message can be
        overtaken), minus two task switches and a channel hand-off per request: the fast path of a
        request to a ready model (benchmarks/RESULTS.md). Only for requests and serve-done, whose
        senders are handlers; upstream notices and swap results always go through the inbox.
        The empty-inbox condition matters: a crash notice still in the inbox must be handled
        before the next request (test_crashed_model_is_started_again_by_the_next_request).
        """
        if inline and self._queued == 0 and self._swaps is not None and not self._closing:
            self._handle(message)
            self._rearm()
            return True
        try:
            self._inbox_send.send_nowait(message)
        except _GONE:
            return False  # the router task is gone: nothing is counted any more
        self._queued += 1
        return True

    # ------------------------------------------------------------ router task

    def _handle(self, message: _Message) -> None:
        scheduler = self._scheduler
        match message:
            case _NewRequest(rid, model, reply, on_progress, require_ready, explicit, force, hold):
                self._waiters[rid] = _Waiter(reply, on_progress)
                if explicit:
                    self._end_backoff(model, "an API load")  # a person asks for a fresh try
                elif self._backoff.active(model, trio.current_time()):
                    _Effects(self).refuse(rid, self._backoff_error(model))
                    return
                scheduler.request(
                    rid,
                    model,
                    require_ready=require_ready,
                    explicit=explicit,
                    force=force,
                    hold=hold,
                )
            case _Cancel(rid):
                self._waiters.pop(rid, None)
                scheduler.cancel(rid)
            case _ServeDone(rid):
                scheduler.serve_done(rid)
            case _LoadDone(ticket, error, finished_at):
                self._load_done(ticket, error, finished_at)
            case _StopDone(models, reply):
                scheduler.stop_done(models)
                if reply is not None:
                    self._unload_replies.discard(reply)
                    try:
                        reply.send_nowait(sorted(models))
                    except (*_GONE, trio.WouldBlock):
                        pass
            case _Unload(models, reply):
                self._unload_replies.add(reply)
                targets = scheduler.unload(models)
                if targets:
                    log.info("unload: stopping %s", ", ".join(sorted(targets)))
                self.stopping_for(targets, "api")
                self._start_stop(targets, reply)
            case _Shutdown(refusal):
                self._closing = True
                scheduler.shutdown(refusal)
            case _Reconfigure():
                self._reconfigure(message)
            case _BackoffOver(model):
                if self._backoff.expire(model, trio.current_time()):
                    log.info("%s: crash-loop backoff over; the next request starts it", model)
                    self._publish_backoff(model, entered=False)
            case StateChanged():
                self._state_changed(message)
            case IdleExpired(model):
                if scheduler.idle_expired(model):
                    log.info("%s: idle for its ttl, stopping", model)
                    self.stopping_for((model,), "ttl")
                    self._start_stop(frozenset({model}), None)
                else:
                    # The timer reports once per idle period: ask for a new one, or a report
                    # declined now (a load of it under way, a request queued for it that then
                    # left) would be the last and the model would never be unloaded by TTL.
                    upstream = self._upstreams.get(model)
                    if upstream is not None:  # None: removed by a reload, being retired
                        upstream.rearm_idle()
            case LogLine():
                pass
        if self._detached:
            self._close_detached()

    def _rearm(self) -> None:
        """Bound the router task's wait by the scheduler's next deadline (cheap when nothing
        waits: the deadline is then None)."""
        deadline = self._scheduler.next_deadline()
        armed = math.inf if deadline is None else deadline
        if armed != self._timer.deadline:  # setting it re-registers the scope with trio: costs
            self._timer.deadline = armed

    def _close_detached(self) -> None:
        """End the requests that do not hold a model the scheduler no longer sees ready."""
        for model, scopes in self._detached.items():
            if self._scheduler.state(model) != UpstreamState.READY:
                for scope in scopes:
                    scope.cancel()

    def _answer_leftovers(self) -> None:
        """Answer what still waits in the inbox as the router stops (cancelled, or crashed): each
        request gets the refusal (503), each unload ``[]``; their handlers would hang else."""
        while True:
            try:
                message = self._inbox_recv.receive_nowait()
            except (trio.WouldBlock, *_GONE):
                return
            match message:
                case _NewRequest(reply=reply):
                    try:
                        reply.send_nowait(self._refusal())
                    except (*_GONE, trio.WouldBlock):
                        pass  # the handler is gone: nobody to tell
                case _Unload(reply=unload_reply):
                    unload_reply.close()  # unload() returns [] (the daemon ends the processes)
                case _:
                    pass  # notices, results, cancels: nobody waits for them

    def _state_changed(self, event: StateChanged) -> None:
        payload: dict[str, object] = {
            "type": "model_state",
            "model": event.model,
            "state": str(event.state),
            "previous": str(event.previous),
            "at": event.at,
        }
        if event.error is not None:
            payload["error"] = event.error
        if event.state == UpstreamState.STOPPING:
            reason = self._stop_reasons.pop(event.model, None) or event.reason
            if reason is None and event.previous == UpstreamState.READY and event.error:
                reason = "exit"  # a ready model that exited by itself
            if reason is not None:
                payload["reason"] = reason
        elif event.state == UpstreamState.STOPPED:
            self._stop_reasons.pop(event.model, None)
        self._bus.publish(payload)
        self._scheduler.upstream_sleeping(event.model, event.state == UpstreamState.SLEEPING)
        if event.state == UpstreamState.STOPPING:
            self._scheduler.upstream_stopping(event.model)
        elif event.state == UpstreamState.STOPPED:
            self._scheduler.upstream_stopped(event.model)

    def stopping_for(self, models: Collection[str], reason: str) -> None:
        """Record why ``models`` are about to be stopped (call from the router task, before the
        stop): their next ``model_state`` ``stopping`` event carries it as ``reason``
        (``evictions_total{reason}`` in the metrics). A model that is not running never
        publishes that event, so its reason is dropped with the next stop of it."""
        for model in models:
            if self._upstreams[model].state in (UpstreamState.READY, UpstreamState.STARTING):
                self._stop_reasons[model] = reason

    def _tell(self, waiter: _Waiter, progress: Progress) -> None:
        if waiter.on_progress is None:
            return
        try:
            waiter.on_progress(progress)
        except Exception:
            # A broken progress reporter must not take the router (and every request) down.
            log.exception("on_progress callback failed")

    def _start_load(self, target: str, evict: frozenset[str], explanation: str) -> None:
        assert self._swaps is not None, "the scheduler only acts inside run()"
        log.info("swap: loading %s; %s", target, explanation)
        ticket = _Ticket(target, evict, trio.current_time())
        for_memory: frozenset[str] = frozenset()
        if isinstance(self._swapper, MemorySwapper):
            # the load is registered already: the running set it was decided on lacks the target
            plan = self._swapper.plan(target, self._scheduler.running() - {target})
            ticket.stop, for_memory = plan.stop, frozenset(plan.for_memory)
        self._tickets[target] = ticket
        self.stopping_for(evict - for_memory, "swap")
        self.stopping_for(for_memory, "memory")
        self._bus.publish(
            {"type": "swap", "phase": "start", "model": target, "evict": sorted(evict)}
        )
        self._swaps.start_soon(self._swap, ticket, name=f"swap to {target}")

    def _load_done(self, ticket: _Ticket, error: StartFailed | None, finished_at: float) -> None:
        target = ticket.target
        if self._tickets.get(target) is ticket:
            del self._tickets[target]
        seconds = finished_at - ticket.started_at
        event: dict[str, object] = {
            "type": "swap",
            "phase": "done",
            "model": target,
            "evict": sorted(ticket.evict),
            "ok": error is None,
            "duration_ms": round(seconds * 1000, 1),
        }
        if error is None:
            log.info("swap: %s ready in %.2fs", target, seconds)
            proxy_error = None
        else:
            log.warning("swap: loading %s failed after %.2fs: %s", target, seconds, error)
            event["error"] = str(error)
            proxy_error = self._proxy_error(error)
        self._bus.publish(event)
        # A failed start is reported before the teardown of a group its server left behind; the
        # upstream's stopped notice, which follows this message, ends that.
        if error is None:
            self._backoff.succeeded(target)
        elif error.reason in COUNTED_REASONS:
            cooldown = self._backoff.failed(target, finished_at, error.message)
            if cooldown is not None:
                log.warning(
                    "%s: %d failed starts in a row: backing off for %g s (requests get 503)",
                    target,
                    self._backoff.failures(target),
                    cooldown,
                )
                # queued requests must not start it again; new ones are refused on arrival
                self._scheduler.refuse_queued(target, self._backoff_error(target))
                self._publish_backoff(target, entered=True)
                assert self._swaps is not None
                self._swaps.start_soon(self._backoff_timer, target, cooldown)
        upstream = self._upstreams.get(target)
        still_stopping = upstream is not None and upstream.state == UpstreamState.STOPPING
        stopped_at = ticket.stopped_at
        stop_seconds = 0.0 if stopped_at is None else stopped_at - ticket.started_at
        self._scheduler.load_done(
            target,
            proxy_error,
            seconds,
            still_stopping=still_stopping,
            stop_seconds=stop_seconds,
        )

    def _proxy_error(self, error: StartFailed) -> ProxyError:
        if error.reason == "timeout":
            return errors.gateway_timeout(error.model, str(error))
        if error.reason == "cancelled":
            return self._refusal() if self._closing else errors.model_unloaded(error.model)
        return errors.upstream_error(error.model, str(error))

    def _backoff_error(self, model: str) -> ProxyError:
        now = trio.current_time()
        return errors.model_backoff(
            model, self._backoff.retry_after(model, now), self._backoff.message(model)
        )

    def _end_backoff(self, model: str, why: str) -> None:
        if self._backoff.forget(model) and model in self._upstreams:
            log.info("%s: crash-loop backoff ended by %s", model, why)
            self._publish_backoff(model, entered=False)

    def _publish_backoff(self, model: str, *, entered: bool) -> None:
        """The feed's ``model_state`` for entering (from ``stopped``) or leaving ``backoff``."""
        backoff, stopped = str(UpstreamState.BACKOFF), str(UpstreamState.STOPPED)
        payload: dict[str, object] = {
            "type": "model_state",
            "model": model,
            "state": backoff if entered else stopped,
            "previous": stopped if entered else backoff,
            "at": time.time(),
        }
        if entered:
            payload["error"] = self._backoff.message(model)
        self._bus.publish(payload)

    async def _backoff_timer(self, model: str, cooldown: float) -> None:
        await trio.sleep(cooldown)
        self._post(_BackoffOver(model))

    def _reconfigure(self, message: _Reconfigure) -> None:
        assert self._swaps is not None
        for model in (*message.restarted, *message.removed):
            self._end_backoff(model, "a reload that changed it")
        retiring = {m: self._upstreams[m] for m in (*message.restarted, *message.removed)}
        tickets = {m: self._tickets[m] for m in retiring if m in self._tickets}
        for ticket in tickets.values():
            ticket.aborted = True  # a load of the old definition under way: do not start it
        self._config = message.config
        self._upstreams = {
            m: self._upstreams[m] for m in message.config.models if m not in message.upstreams
        }
        self._upstreams.update(message.upstreams)
        config = message.config
        self._swapper = with_memory(swapper_for(config), config.models, config.gpu_memory)
        if isinstance(self._swapper, MemorySwapper):
            self._swapper.bind(self._scheduler, self._measured)
        self._scheduler.reconfigure(
            message.config.models,
            self._swapper,
            restarted=message.restarted,
            removed=message.removed,
            starvation_after=config.routing.starvation_after,
        )
        self._swaps.start_soon(self._retire, retiring, tickets, message.done, name="reload")

    def _start_stop(
        self, models: Collection[str], reply: trio.MemorySendChannel[list[str]] | None
    ) -> None:
        assert self._swaps is not None
        tickets: dict[str, _Ticket] = {}
        for model in models:
            ticket = self._tickets.get(model)
            if ticket is not None:
                ticket.aborted = True  # an unload during a load: do not start it
                tickets[model] = ticket
        self._swaps.start_soon(self._stop, frozenset(models), tickets, reply)

    # ------------------------------------------------------------ swaps nursery tasks

    async def _swap(self, ticket: _Ticket) -> None:
        """One load: stop the evicted models in parallel, then start the target."""
        try:
            error = await self._load(ticket)
            self._post(_LoadDone(ticket, error, trio.current_time()))
        finally:
            ticket.finished.set()

    async def _load(self, ticket: _Ticket) -> StartFailed | None:
        target = ticket.target
        try:
            async with trio.open_nursery() as nursery:
                for model in sorted(ticket.evict):
                    nursery.start_soon(self._stop_quietly, model, model not in ticket.stop)
            ticket.stopped_at = trio.current_time()
            if ticket.aborted:
                return StartFailed(target, "cancelled", f"loading {target} cancelled: unloaded")
            await self._upstreams[target].start()
        except StartFailed as exc:
            return exc
        except Exception as exc:
            # An upstream bug must fail this load's waiters, not the router and every request.
            log.exception("swap: starting %s raised", target)
            return StartFailed(target, "spawn", f"{type(exc).__name__}: {exc}")
        return None

    async def _stop(
        self,
        models: frozenset[str],
        tickets: Mapping[str, _Ticket],
        reply: trio.MemorySendChannel[list[str]] | None,
    ) -> None:
        async with trio.open_nursery() as nursery:
            for model in sorted(models):
                nursery.start_soon(self._stop_one, model, tickets.get(model))
        self._post(_StopDone(models, reply))

    async def _stop_one(self, model: str, ticket: _Ticket | None) -> None:
        await self._stop_quietly(model)
        if ticket is not None:
            # A load of this model was under way: its start may have won the race with our stop
            # (a start the upstream had not yet seen). Once the load is over, stop again.
            await ticket.finished.wait()
            await self._stop_quietly(model)

    async def _stop_quietly(self, model: str, evict: bool = False) -> None:
        """Stop ``model``; ``evict``: to make room for a load (a model may sleep instead)."""
        upstream = self._upstreams.get(model)
        if upstream is None:  # removed by a reload, which retires it
            return
        try:
            await (upstream.evict() if evict else upstream.stop())
        except Exception:
            log.exception("stopping %s raised", model)

    async def _retire(
        self,
        retiring: Mapping[str, UpstreamLike],
        tickets: Mapping[str, _Ticket],
        done: trio.Event,
    ) -> None:
        """Stop the Upstreams a reload retires, each once its requests in flight are done."""
        try:
            async with trio.open_nursery() as nursery:
                for model, upstream in sorted(retiring.items()):
                    nursery.start_soon(self._retire_one, model, upstream, tickets.get(model))
            self._post(_StopDone(frozenset(retiring), None))
        finally:
            done.set()

    async def _retire_one(self, model: str, upstream: UpstreamLike, ticket: _Ticket | None) -> None:
        count = self._scheduler.in_flight(model)
        if count:
            log.info(
                "reload: %s: waiting up to %g s for %d request(s) in flight",
                model,
                RETIRE_DRAIN_SECONDS,
                count,
            )
            drained = self._drained.setdefault(model, trio.Event())
            with trio.move_on_after(RETIRE_DRAIN_SECONDS):
                await drained.wait()
            left = self._scheduler.in_flight(model)
            if left:
                log.warning("reload: %s: %d request(s) in flight are cut", model, left)
        log.info("reload: stopping the old process of %s", model)
        if upstream.state in (UpstreamState.READY, UpstreamState.STARTING):
            self._stop_reasons[model] = "reload"  # evictions_total{reason="reload"}
        await _stop_upstream(model, upstream)
        if ticket is not None:
            # its start may have won the race with our stop: once the load is over, stop again
            await ticket.finished.wait()
            await _stop_upstream(model, upstream)


async def _stop_upstream(model: str, upstream: UpstreamLike) -> None:
    try:
        await upstream.stop()
    except Exception:
        log.exception("stopping %s raised", model)
