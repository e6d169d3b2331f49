"""The scheduler: which request is served, which waits, which load starts (SPEC 3.5).

Theory of operation
===================

The scheduler is a plain object: no trio, no I/O. The router task feeds it events by
calling its methods (``request``, ``cancel``, ``serve_done``, ``load_done``, ``stop_done``,
``unload``, ``idle_expired``, ``upstream_stopping``, ``upstream_stopped``, ``tick``, ``shutdown``)
one at a time, and it acts
through an :class:`Effects` object it is given (grant or refuse a request, start a load, report
progress, the queue and in-flight counts). Two decisions come back as return values instead,
because the caller must act on them at once and in its own way: ``unload`` returns the models to
stop, ``idle_expired`` says whether to stop the model. We chose an Effects interface over a list of
actions (h11 style) because one effect has a result the state machine depends on: a grant counts
in flight only if it reached a live handler (``Effects.grant`` returns False otherwise).

Time is read from a ``clock`` function the owner passes in (the router passes
``trio.current_time``; tests pass a number they move by hand), so every decision is still a pure
function of the events and the times they came at. The rules that depend on time (10-12) change
their answer only at the instants :meth:`Scheduler.next_deadline` names; the owner calls
:meth:`Scheduler.tick` at each of them.

``plan`` and ``waiting_requests`` explain, without side effects, what a request would get and why
each waiting request waits; they run the very functions ``request`` and the drain decide with
(ARCHITECTURE rule 1), so an explanation can never disagree with what happens.

The rules, numbered so tests and comments can cite them:

1. A request is *admitted* before anything else: at most ``concurrency_limit`` requests per model
   are queued, waiting for a load or served at once (0 = no limit). Over it: 429.
2. An admitted request then takes the first matching rule of :data:`DECISION_RULES` (join a load
   under way, wait for a stop, fast path, wait for a colliding load/stop, wait for busy models to
   finish, else start a load). Every request ends exactly once: granted, refused or cancelled.
3. A load reserves its target and its evictions until it is done; two loads whose reservations
   overlap never run together, loads that do not overlap run in parallel.
4. A model with requests in flight is never evicted (TTL included). In flight is counted iff a
   grant reached a live handler, and only that handler's ``serve_done`` (or a cancel after the
   grant) decrements it; counts are never reset by hand, even on unload or crash.
5. The queue is ordered by priority (higher first), then arrival. It is drained whenever something
   that could unblock it happens (load done, stop done, last in-flight request of a model done,
   unload, crash); the drain repeats until nothing changes. Requests for the same model go
   together: when one leaves the queue, every queued request for that model follows it.
6. A cancelled request leaves the queue and its load's waiters; it never causes a load. A load
   started for a request that then left still completes (ARCHITECTURE rule 3).
7. The scheduler's view of a model is derived, never stored: a model is ``starting`` while a load
   targets it, ``stopping`` while it is evicted by a load, stopped by TTL/unload, its load was
   cancelled by an unload, or it crashed after ready (or failed to start) and its group is not gone
   yet; ``ready`` after
   its load succeeded and until it is stopped or crashes; ``sleeping`` while its upstream says so
   (SPEC 6.7: evicted into its sleep mode; a request for it is a load, which wakes it); else
   ``stopped``. Every model neither ``stopped`` nor ``sleeping`` is "running" for the swapper.
8. A ready ``protected`` model is never evicted for a request: a request whose load would evict
   one is refused at once with 409 ``model_protected`` naming it (also when the request was
   queued first and the model became ready meanwhile). An explicit load (``POST
   /api/models/load/{m}``) is refused the same way unless it is forced (``?force=true``).
   TTL, unload and shutdown stop a protected model as any other.
9. The memory rule (:mod:`.memory`) reads in-flight counts, sleepers and :meth:`last_used`, a
   tick bumped by every grant, request end and load start: "least recently used". A request
   whose busy evictions are all there for memory waits with reason ``memory``.
10. ``min_residency``: a ready model loaded less than its ``min_residency`` ago is not evicted;
   requests that need that eviction wait (reason ``min_residency``) until it has been resident
   that long.
11. Starvation guard (``routing.starvation_after`` = S, 0 = off): once the oldest queued request
    has waited S, requests for the models its load would evict no longer go ahead of it (no
    grant, no load of their own: they queue, reason ``starvation_guard``); their in-flight work
    drains, and that load happens. Joining a load already under way is not held back.
12. ``queue_timeout`` (per model, else global; 0 = none): a request that has waited that long,
    queued or for a load, gets 503 ``queue_timeout``; one whose estimated wait already exceeds it
    gets that 503 at once. The estimate (:meth:`Scheduler.plan`) adds the measured load and stop
    times of what is ahead of it: the loads under way it waits for, one load per model queued
    ahead of it, then its own stops and load; it is unknown (None, never refused at once) while a
    load it needs has never been measured. Explicit loads have no queue timeout.
13. ``autoload = false``: a request for a model that is neither ready nor being loaded gets 409
    ``model_not_loaded`` at once; only an explicit load (API, preload) loads it.
14. A request that does not hold its model (a websocket with ``websockets_hold_model = false``)
    is granted like any other, but never counts in flight: it blocks no swap and no TTL, and its
    owner ends it when the model stops.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Protocol

import attrs

from llama_swap_trio import errors
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.routing.api import Progress, QueueEntry
from llama_swap_trio.routing.memory import MemorySwapper
from llama_swap_trio.routing.plan import Blocker, Plan, WaitingRequest, explain
from llama_swap_trio.routing.swappers import Swapper
from llama_swap_trio.upstream.api import UpstreamState


class Effects(Protocol):
    """Everything the scheduler does to the world. Implementations must not block."""

    def grant(self, rid: int, model: str, load_seconds: float) -> bool:
        """Hand request ``rid`` its grant; True iff a live handler received it."""
        ...

    def refuse(self, rid: int, error: ProxyError) -> None:
        """Answer request ``rid`` with ``error`` (a handler that is gone is ignored)."""
        ...

    def progress(self, rid: int, progress: Progress) -> None: ...

    def start_load(self, target: str, evict: frozenset[str], explanation: str) -> None:
        """Stop ``evict`` (in parallel), then start ``target``; report with ``load_done``."""
        ...

    def queue_changed(self, queue: tuple[QueueEntry, ...]) -> None: ...

    def in_flight_changed(self, model: str, count: int) -> None: ...


class Decision(enum.Enum):
    JOIN = "join"
    QUEUE = "queue"
    GRANT = "grant"
    START = "start"
    REFUSE = "refuse"


@attrs.frozen
class Facts:
    """What the decision rules look at, for one model at one moment."""

    loading: bool
    load_cancelled: bool
    stopping: bool
    ready: bool
    evict: frozenset[str]
    collides: bool
    evict_busy: bool
    #: ready protected models among ``evict`` (rule 8; empty for a forced load)
    protected: frozenset[str] = frozenset()
    #: ready models among ``evict`` still within their ``min_residency`` (rule 10)
    young: frozenset[str] = frozenset()
    #: the starvation guard holds requests for this model back (rule 11)
    guarded: bool = False
    #: autoload is off and the model is neither ready nor being loaded (rule 13)
    manual: bool = False
    #: the busy models among ``evict`` when every one of them is evicted for memory (rule 9):
    #: the request waits for ``memory``, not for a group rule's ``in_flight``
    memory_busy: frozenset[str] = frozenset()


#: The decision tree (SPEC 3.5 and 6.5, llama-swap's FIFO), in order; the first matching rule
#: wins. The last column is what ``/api/queue`` and the feed say a QUEUE decision waits for.
DECISION_RULES: tuple[tuple[str, Callable[[Facts], bool], Decision, str], ...] = (
    ("autoload is off and it is not loaded", lambda f: f.manual, Decision.REFUSE, ""),
    ("an unloaded load of it winds down", lambda f: f.load_cancelled, Decision.QUEUE, "loading"),
    ("a load of it is under way", lambda f: f.loading, Decision.JOIN, ""),
    ("it is being stopped", lambda f: f.stopping, Decision.QUEUE, "loading"),
    ("the starvation guard holds it back", lambda f: f.guarded, Decision.QUEUE, "starvation_guard"),
    ("ready, nothing to evict", lambda f: f.ready and not f.evict, Decision.GRANT, ""),
    ("an eviction is a ready protected model", lambda f: bool(f.protected), Decision.REFUSE, ""),
    ("an eviction collides with a load/stop", lambda f: f.collides, Decision.QUEUE, "loading"),
    ("the memory it needs is held by busy models", lambda f: bool(f.memory_busy), Decision.QUEUE,
     "memory"),
    ("an eviction has requests in flight", lambda f: f.evict_busy, Decision.QUEUE, "in_flight"),
    ("an eviction is within min_residency", lambda f: bool(f.young), Decision.QUEUE,
     "min_residency"),
    ("otherwise", lambda f: True, Decision.START, ""),
)  # fmt: skip


@attrs.frozen
class Verdict:
    """What a request gets: the decision, the rule that said so, and why it waits (QUEUE)."""

    decision: Decision
    rule: str
    reason: str
    facts: Facts | None
    #: the refusal, for REFUSE
    error: ProxyError | None = None


#: the verdict of the fast path in :meth:`Scheduler._verdict` (immutable, shared)
_READY_GRANT = Verdict(
    Decision.GRANT,
    "ready, nothing to evict",
    "",
    Facts(
        loading=False,
        load_cancelled=False,
        stopping=False,
        ready=True,
        evict=frozenset(),
        collides=False,
        evict_busy=False,
    ),
)


def _no_clock() -> float:
    return 0.0


@attrs.define(eq=False)
class _Request:
    rid: int
    model: str
    priority: int
    #: an explicit load (API, preload): the 409 says how to force it; ``force`` evicts protected
    explicit: bool = False
    force: bool = False
    #: counts in flight once granted (rule 14)
    hold: bool = True
    #: clock time it came in, and when its queue_timeout ends (inf = never; rule 12)
    arrival: float = 0.0
    deadline: float = math.inf
    #: the target of the load this request waits for; None while queued
    load: str | None = None
    #: the last queue position told to the request (0 = none)
    position: int = 0


@attrs.define(eq=False)
class _Load:
    target: str
    evict: frozenset[str]
    waiters: list[_Request]
    #: an unload hit the target: waiters were refused, the reservation holds until load_done
    cancelled: bool = False
    #: clock time the load started (for the wait estimate, rule 12)
    started: float = 0.0


class Scheduler:
    """The pure scheduling state machine. See the module docstring for the rules."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        swapper: Swapper,
        effects: Effects,
        *,
        clock: Callable[[], float] = _no_clock,
        starvation_after: float = 0.0,
    ) -> None:
        """Args:
        clock: the current time in seconds (without one, time stands still).
        starvation_after: ``routing.starvation_after`` (rule 11); 0 = no guard.
        """
        self._models = models
        self._swapper = swapper
        self._effects = effects
        self._clock = clock
        self._starvation_after = starvation_after
        #: when each ready model became ready (rule 10)
        self._ready_since: dict[str, float] = {}
        #: measured seconds: the last successful start of each model, the last stop (rule 12)
        self._load_time: dict[str, float] = {}
        self._stop_time: dict[str, float] = {}
        self._queued: list[_Request] = []
        self._waiting: dict[int, _Request] = {}
        self._granted: dict[int, str] = {}
        self._loads: dict[str, _Load] = {}
        self._ready: set[str] = set()
        self._stopping: Counter[str] = Counter()
        #: ready models whose process exited by itself; until their group is gone (rule 7)
        self._exiting: set[str] = set()
        self._admitted: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._closing = False
        self._refusal: Callable[[], ProxyError] = errors.shutting_down
        self._told_queue: tuple[tuple[str, int, str], ...] = ()
        self._told_shape: tuple[tuple[str, int], ...] = ()
        #: models whose process sleeps (SPEC 6.7): not running, their sleep memory still held
        self._sleeping: set[str] = set()
        #: the memory rule's "least recently used": a tick per grant, request end and load
        self._tick = 0
        self._last_used: dict[str, int] = {}

    # ---------------------------------------------------------------- views

    def state(self, model: str) -> UpstreamState:
        """The scheduler's view of ``model`` (rule 7)."""
        load = self._loads.get(model)
        if load is not None:
            return UpstreamState.STOPPING if load.cancelled else UpstreamState.STARTING
        if (
            self._stopping[model]
            or model in self._exiting
            or any(model in ld.evict for ld in self._loads.values())
        ):
            return UpstreamState.STOPPING
        if model in self._ready:
            return UpstreamState.READY
        if model in self._sleeping:
            return UpstreamState.SLEEPING
        return UpstreamState.STOPPED

    def in_flight(self, model: str) -> int:
        return self._in_flight[model]

    def last_used(self, model: str) -> int:
        """The memory rule's recency (``routing.memory.Residency``); 0 = never used."""
        return self._last_used.get(model, 0)

    def sleeping(self) -> frozenset[str]:
        return frozenset(self._sleeping)

    def admitted(self, model: str) -> int:
        return self._admitted[model]

    def queue(self) -> tuple[QueueEntry, ...]:
        """The requests that wait for their turn, each with what it waits for."""
        return tuple(
            QueueEntry(r.model, i, self._verdict(r.model, r.force, r.explicit).reason or "turn")
            for i, r in enumerate(self._queued, start=1)
        )

    def waiting_requests(self) -> tuple[WaitingRequest, ...]:
        """Every waiting request (``GET /api/queue``): the queue in order (positions 1...), then
        the requests that wait for a load under way (position 0, reason ``loading``)."""
        now = self._clock()
        found = [
            WaitingRequest(entry.position, r.rid, r.model, now - r.arrival, entry.reason)
            for entry, r in zip(self.queue(), self._queued, strict=True)
        ]
        for load in self._loads.values():
            found.extend(
                WaitingRequest(0, r.rid, r.model, now - r.arrival, "loading") for r in load.waiters
            )
        return tuple(found)

    def loads(self) -> dict[str, frozenset[str]]:
        """Loads under way: target -> evictions."""
        return {target: load.evict for target, load in self._loads.items()}

    def waiting(self) -> frozenset[int]:
        """Requests that wait (queued or for a load)."""
        return frozenset(self._waiting)

    def granted(self) -> frozenset[int]:
        return frozenset(self._granted)

    def running(self) -> frozenset[str]:
        """Every model not stopped nor sleeping (rule 7): what the swapper is given."""
        gone = (UpstreamState.STOPPED, UpstreamState.SLEEPING)
        return frozenset(m for m in self._models if self.state(m) not in gone)

    def facts(self, model: str, *, force: bool = False, explicit: bool = False) -> Facts:
        """What the decision rules look at for a request for ``model`` (``force``: rule 8;
        ``explicit``: an API load, which autoload = false does not refuse, rule 13)."""
        load = self._loads.get(model)
        stopping = self.state(model) == UpstreamState.STOPPING
        ready = model in self._ready
        manual = (
            not ready
            and not (load is not None and not load.cancelled)
            and not explicit
            and not self._models[model].autoload
        )
        evict: frozenset[str] = frozenset()
        young: frozenset[str] = frozenset()
        collides = evict_busy = guarded = False
        memory_busy: frozenset[str] = frozenset()
        if load is None and not stopping:
            running = self.running()
            evict = self._swapper.evictions(model, running)
            reserved = set(self._stopping) | self._exiting
            for other in self._loads.values():
                reserved.add(other.target)
                reserved.update(other.evict)
            collides = not evict.isdisjoint(reserved)
            busy = frozenset(m for m in evict if self._in_flight[m] > 0)
            evict_busy = bool(busy)
            memory = self._swapper if isinstance(self._swapper, MemorySwapper) else None
            if busy and memory is not None and busy <= memory.waits_for_memory(model, running):
                memory_busy = busy
            if self._queued and self._starvation_after:
                guarded = model in self._guard()
            if evict:
                young = self._young(evict)
        protected: frozenset[str] = frozenset()
        if evict and not force:
            protected = frozenset(
                m for m in evict if m in self._ready and self._models[m].protected
            )
        return Facts(
            loading=load is not None and not load.cancelled,
            load_cancelled=load is not None and load.cancelled,
            stopping=stopping,
            ready=ready,
            evict=evict,
            collides=collides,
            evict_busy=evict_busy,
            protected=protected,
            young=young,
            guarded=guarded,
            manual=manual,
            memory_busy=memory_busy,
        )

    def _young(self, models: frozenset[str]) -> frozenset[str]:
        """The ready models of ``models`` still within their ``min_residency`` (rule 10)."""
        if not any(self._models[m].min_residency for m in models):
            return frozenset()
        now = self._clock()
        return frozenset(
            m
            for m in models
            if m in self._ready_since and now < self._ready_since[m] + self._models[m].min_residency
        )

    def _oldest(self) -> _Request | None:
        return min(self._queued, key=lambda r: r.arrival, default=None)

    def _guard(self) -> frozenset[str]:
        """The models the starvation guard holds back (rule 11): the evictions of the oldest
        queued request's load, once it has waited ``starvation_after``."""
        oldest = self._oldest()
        if oldest is None or self._clock() - oldest.arrival < self._starvation_after:
            return frozenset()
        return self._swapper.evictions(oldest.model, self.running())

    def decide(
        self, model: str, *, force: bool = False, explicit: bool = False
    ) -> tuple[Decision, str]:
        """What a request for ``model`` would get now, and the rule that said so."""
        verdict = self._verdict(model, force, explicit)
        return verdict.decision, verdict.rule

    def decide_by_table(self, model: str) -> tuple[Decision, str]:
        """:meth:`decide` without the fast path (the property tests check that they agree)."""
        verdict = self._table(model, False, False)
        return verdict.decision, verdict.rule

    def _verdict(self, model: str, force: bool, explicit: bool) -> Verdict:
        """The decision for one request (rule 2); REFUSE comes with its error."""
        # The common case, decided without building the facts: nothing loads, stops or waits,
        # so the rules before "ready, nothing to evict" cannot apply and the running models are
        # exactly the ready ones (rule 7). Same answer as the table's.
        settled = not (self._loads or self._stopping or self._exiting or self._queued)
        ready = model in self._ready
        if settled and ready and not self._swapper.evictions(model, frozenset(self._ready)):
            return _READY_GRANT
        return self._table(model, force, explicit)

    def _table(self, model: str, force: bool, explicit: bool) -> Verdict:
        """The decision table (rule 2): the first rule whose condition holds."""
        facts = self.facts(model, force=force, explicit=explicit)
        for rule, applies, decision, reason in DECISION_RULES:
            if applies(facts):
                error = None
                if decision is Decision.REFUSE:
                    if facts.manual:
                        error = errors.model_not_loaded(model, autoload_off=True)
                    else:
                        protected = sorted(facts.protected)
                        error = errors.model_protected(model, protected, api_load=explicit)
                return Verdict(decision, rule, reason, facts, error)
        raise AssertionError("the last rule always applies")  # pragma: no cover

    def _arrival(
        self, config: ModelConfig, explicit: bool, force: bool, *, explain: bool = False
    ) -> tuple[Verdict, float | None]:
        """What a new request for ``config`` gets (rules 1, 2, 12) and its estimated wait: the
        one function behind both ``request`` and ``plan``. The estimate is worked out only
        when the model has a queue timeout or ``explain`` (a plan) asks for it."""
        model = config.id
        if self._closing:
            return Verdict(Decision.REFUSE, "shutting down", "", None, self._refusal()), None
        if config.concurrency_limit and self._admitted[model] >= config.concurrency_limit:
            error = errors.concurrency_limit(model, config.concurrency_limit)
            return Verdict(Decision.REFUSE, "over its concurrency_limit", "", None, error), None
        verdict = self._verdict(model, force, explicit)
        if verdict.decision is Decision.GRANT:
            return verdict, 0.0
        if verdict.decision is Decision.REFUSE:
            return verdict, None
        timeout = config.queue_timeout if not explicit else 0.0
        if not (timeout or explain):  # the estimate costs; only a timeout or a plan needs it
            return verdict, None
        estimate = self._estimate(config, verdict, self._ahead(config.priority))
        if timeout and estimate is not None and estimate > timeout:
            error = errors.queue_timeout(model, config.queue_timeout, estimate, at_once=True)
            rule = "its estimated wait exceeds its queue_timeout"
            return Verdict(Decision.REFUSE, rule, "", verdict.facts, error), estimate
        return verdict, estimate

    def _ahead(self, priority: int) -> list[_Request]:
        """The queued requests a new request of ``priority`` would wait behind (rule 5)."""
        return [r for r in self._queued if r.priority >= priority]

    def _remaining(self, load: _Load, now: float) -> float | None:
        measured = self._load_time.get(load.target)
        if measured is None:
            return None
        stop = max((self._stop_time.get(m, 0.0) for m in load.evict), default=0.0)
        return max(0.0, load.started + stop + measured - now)

    def _estimate(
        self, config: ModelConfig, verdict: Verdict, ahead: list[_Request]
    ) -> float | None:
        """Rule 11: seconds until a request for ``config`` would be served, from measured load
        and stop times; None when a load it needs was never measured. In-flight requests it
        waits for count 0 (their length is not known in advance)."""
        model = config.id
        now = self._clock()
        if verdict.decision is Decision.JOIN:
            return self._remaining(self._loads[model], now)
        facts = verdict.facts
        assert facts is not None
        total = 0.0
        if verdict.decision is Decision.QUEUE:
            needs = facts.evict | {model}
            for load in self._loads.values():
                if load.target in needs or not load.evict.isdisjoint(needs):
                    left = self._remaining(load, now)
                    if left is None:
                        return None
                    total = max(total, left)
            for other in dict.fromkeys(r.model for r in ahead):
                if other != model and other not in self._ready and other not in self._loads:
                    measured = self._load_time.get(other)
                    if measured is None:
                        return None
                    total += measured
        measured = self._load_time.get(model)
        if measured is None:
            return None
        stop = max((self._stop_time.get(m, 0.0) for m in facts.evict), default=0.0)
        return total + stop + measured

    def plan(self, model: str, *, force: bool = False) -> Plan:
        """What a request for ``model`` would get now, and why (``GET /api/plan``); no side
        effects. ``force``: as an API load with ``?force=true`` (which also has no timeout)."""
        config = self._models[model]
        verdict, estimate = self._arrival(config, force, force, explain=True)
        facts = verdict.facts
        evict = facts.evict if facts is not None else frozenset()
        if verdict.decision is Decision.JOIN:
            evict = self._loads[model].evict
        blocked: list[Blocker] = []
        if facts is not None and verdict.decision in (Decision.QUEUE, Decision.JOIN):
            blocked = self._blockers(model, facts)
        elif facts is not None and verdict.decision is Decision.REFUSE:
            blocked = [Blocker(m, self._in_flight[m], "protected") for m in sorted(facts.protected)]
        ahead = self._ahead(config.priority) if verdict.decision is Decision.QUEUE else []
        oldest = self._oldest()
        plan = Plan(
            model=model,
            state=str(self.state(model)),
            decision=verdict.decision.value,
            rule=verdict.rule,
            reason=verdict.reason,
            would_evict=tuple(sorted(evict)),
            blocked_by=tuple(blocked),
            queue_ahead=len(ahead),
            estimated_wait=estimate,
            error=verdict.error,
            oldest_wait=None if oldest is None else self._clock() - oldest.arrival,
            swapper=self._swapper.explain(model, self.running()),
            explanation="",
        )
        return attrs.evolve(plan, explanation=explain(plan))

    def _blockers(self, model: str, facts: Facts) -> list[Blocker]:
        """Every model a waiting request for ``model`` waits on, with why."""
        found: list[Blocker] = []

        def add(name: str, reason: str) -> None:
            found.append(Blocker(name, self._in_flight[name], reason))

        if facts.loading or facts.load_cancelled or facts.stopping:
            add(model, "loading" if facts.loading else "stopping")
            return found
        if facts.guarded:
            oldest = self._oldest()
            assert oldest is not None
            add(oldest.model, "starvation_guard")
        reserved = {m: "stopping" for m in (*self._stopping, *self._exiting)}
        for load in self._loads.values():
            reserved[load.target] = "loading"
            reserved.update(dict.fromkeys(load.evict, "stopping"))
        for name in sorted(facts.evict):
            if name in reserved:
                add(name, reserved[name])
            elif name in facts.memory_busy:
                add(name, "memory")
            elif self._in_flight[name]:
                add(name, "in_flight")
            elif name in facts.young:
                add(name, "min_residency")
        return found

    def next_deadline(self) -> float | None:
        """The next instant a time-based rule (10-12) may change a decision; call ``tick`` then.
        None while nothing waits."""
        if not self._waiting:
            return None
        now = self._clock()
        times = [r.deadline for r in self._waiting.values() if r.deadline > now]
        if self._queued:
            times += [
                end
                for m, since in self._ready_since.items()
                if (end := since + self._models[m].min_residency) > now
            ]
            oldest = self._oldest()
            if self._starvation_after and oldest is not None:
                times.append(oldest.arrival + self._starvation_after)
        times = [t for t in times if t > now and t != math.inf]
        return min(times, default=None)

    # ---------------------------------------------------------------- events

    def request(
        self,
        rid: int,
        model: str,
        *,
        require_ready: bool = False,
        explicit: bool = False,
        force: bool = False,
        hold: bool = True,
    ) -> None:
        """A new request (rule 1, then rule 2).

        Args:
            require_ready: grant now or refuse 409 ``model_not_loaded``.
            explicit: an API load or preload: loads with ``autoload = false`` (rule 13), has no
                queue timeout, and its ``model_protected`` says how to force it.
            force: may evict protected models (rule 8; ``?force=true`` of an API load).
            hold: counts in flight once granted (False: rule 14).
        """
        config = self._models.get(model)
        if self._closing:
            self._effects.refuse(rid, self._refusal())
        elif config is None:
            self._effects.refuse(rid, errors.model_not_found(model))
        else:
            verdict, _ = self._arrival(config, explicit, force)
            if verdict.facts is None:  # refused before the decision table (rule 1)
                assert verdict.error is not None
                self._effects.refuse(rid, verdict.error)
                self._after()
                return
            self._admitted[model] += 1
            req = _Request(rid, model, config.priority, explicit, force, hold)
            if verdict.decision is not Decision.GRANT:
                req.arrival = self._clock()
                if config.queue_timeout and not explicit:
                    req.deadline = req.arrival + config.queue_timeout
            if require_ready and verdict.decision is not Decision.GRANT:
                self._release(model)
                self._effects.refuse(rid, errors.model_not_loaded(model))
            elif verdict.decision is Decision.QUEUE:
                self._enqueue(req)
            else:
                self._act(req, verdict)
        self._after()

    def cancel(self, rid: int) -> None:
        """The handler of ``rid`` is gone (rule 6). After a grant this counts as serve done."""
        if rid in self._granted:
            self.serve_done(rid)
            return
        req = self._waiting.pop(rid, None)
        if req is None:
            return  # already answered
        if req.load is not None:
            self._loads[req.load].waiters.remove(req)
        else:
            self._queued.remove(req)
        self._release(req.model)
        self._after()

    def serve_done(self, rid: int) -> None:
        model = self._granted.pop(rid, None)
        if model is None:
            return
        self._in_flight[model] -= 1
        self._used(model)
        self._release(model)
        count = self._in_flight[model]
        if count <= 0:
            del self._in_flight[model]
        self._effects.in_flight_changed(model, count)
        if count <= 0:
            self._drain()
        self._after()

    def load_done(
        self,
        target: str,
        error: ProxyError | None,
        seconds: float,
        *,
        still_stopping: bool = False,
        stop_seconds: float = 0.0,
    ) -> None:
        """The load of ``target`` finished (its evictions are stopped either way).
        ``still_stopping``: it failed, and its process group is still being torn down; until the
        upstream reports ``stopped`` the model counts as stopping, so nothing evicting it (nor a
        new load of it) starts while the leftovers may still hold its port or memory.
        ``stop_seconds``: how much of ``seconds`` stopping the evictions took (rule 12)."""
        load = self._loads.pop(target, None)
        if load is None:
            return
        if error is not None and still_stopping:
            self._exiting.add(target)
        if error is None:
            self._load_time[target] = max(0.0, seconds - stop_seconds)
            for model in load.evict:
                self._stop_time[model] = stop_seconds
        if not load.cancelled:
            if error is None:
                if target not in self._ready:
                    self._ready_since[target] = self._clock()
                self._ready.add(target)
            for req in load.waiters:
                del self._waiting[req.rid]
                if error is None:
                    self._grant(req, seconds)
                else:
                    self._refuse(req, error)
        self._drain(first=target if error is None else None)
        self._after()

    def stop_done(self, models: Iterable[str]) -> None:
        """Stops started for ``unload`` or ``idle_expired`` are done."""
        for model in models:
            if self._stopping[model] > 1:
                self._stopping[model] -= 1
            else:
                self._stopping.pop(model, None)
            self._ready.discard(model)
        self._drain()
        self._after()

    def unload(self, models: Collection[str] | None = None) -> frozenset[str]:
        """Unload ``models`` (all when None): refuse their waiters and queued requests with 503,
        and return those that are running; the caller must stop them and report ``stop_done``.
        In-flight requests are not waited for (llama-swap #125)."""
        names = set(self._models) if models is None else set(models) & set(self._models)
        for name in sorted(names):
            load = self._loads.get(name)
            if load is not None and not load.cancelled:
                load.cancelled = True
                for req in load.waiters:
                    del self._waiting[req.rid]
                    self._refuse(req, errors.model_unloaded(name))
                load.waiters = []
        for req in [r for r in self._queued if r.model in names]:
            self._queued.remove(req)
            del self._waiting[req.rid]
            self._refuse(req, errors.model_unloaded(req.model))
        targets = frozenset(m for m in names if self.state(m) != UpstreamState.STOPPED)
        for model in targets:
            self._stopping[model] += 1
            self._ready.discard(model)
        self._drain()
        self._after()
        return targets

    def idle_expired(self, model: str) -> bool:
        """An upstream's TTL expired. True: stop it (and report ``stop_done``); False: keep it,
        because it is not ready or something is queued, waiting or in flight for it (rule 4)."""
        awake = self.state(model) in (UpstreamState.READY, UpstreamState.SLEEPING)
        if self._closing or not awake or self._admitted[model]:
            return False
        self._ready.discard(model)
        self._stopping[model] += 1
        return True

    def upstream_stopping(self, model: str) -> None:
        """An upstream reported ``stopping``. When we did not ask for it (we think it ready), its
        process exited by itself: nothing more is granted to it, and requests for it wait for the
        ``stopped`` that follows, then start it again (SPEC 3.5). Stops we started are ignored."""
        if self.state(model) == UpstreamState.READY:
            self._ready.discard(model)
            self._exiting.add(model)
            self._after()

    def upstream_stopped(self, model: str) -> None:
        """An upstream reported ``stopped`` on its own (a crash after ready): forget it was ready.
        Stops and loads the router made itself are settled by ``stop_done``/``load_done``."""
        if model in self._ready or model in self._exiting:
            self._ready.discard(model)
            self._exiting.discard(model)
            self._drain()
            self._after()

    def upstream_sleeping(self, model: str, asleep: bool) -> None:
        """An upstream reported a state: ``sleeping`` (its process lives on, holding only its
        sleep memory) or any other (it woke, or stopped)."""
        if asleep == (model in self._sleeping):
            return
        if asleep:
            self._sleeping.add(model)
        else:
            self._sleeping.discard(model)
        self._drain()
        self._after()

    def reconfigure(
        self,
        models: Mapping[str, ModelConfig],
        swapper: Swapper,
        *,
        restarted: Collection[str],
        removed: Collection[str],
        starvation_after: float | None = None,
    ) -> None:
        """A reload (SPEC 6.4): from now on decide with ``models`` and ``swapper``.

        Kept models keep everything (ready, in flight, queue). Restarted and removed ones count as
        stopping until the caller reports ``stop_done`` for them (their old process is retired
        once its requests in flight are done). Requests waiting for a restarted model stay (a
        load of its old definition under way is abandoned and its waiters queue again), so the
        new definition serves them; those for a removed one get 503 ``config_reloaded``.
        ``starvation_after``: the new ``routing.starvation_after`` (None keeps the old one).
        """
        self._models = models
        self._swapper = swapper
        if starvation_after is not None:
            self._starvation_after = starvation_after
        retiring = set(restarted) | set(removed)
        for name in sorted(retiring):
            load = self._loads.get(name)
            if load is not None and not load.cancelled:
                load.cancelled = True
                waiters, load.waiters = load.waiters, []
                for req in waiters:
                    del self._waiting[req.rid]
                    req.load = None
                    if name in removed:
                        self._refuse(req, errors.config_reloaded(name))
                    else:
                        req.priority = models[name].priority
                        self._enqueue(req)
            for req in [r for r in self._queued if r.model in removed and r.model == name]:
                self._queued.remove(req)
                del self._waiting[req.rid]
                self._refuse(req, errors.config_reloaded(name))
            self._stopping[name] += 1
            self._ready.discard(name)
            self._exiting.discard(name)
            self._sleeping.discard(name)
        self._drain()
        self._after()

    def tick(self) -> None:
        """Time has reached :meth:`next_deadline`: refuse the requests whose queue_timeout is
        over (rule 12), then serve what a min_residency that ended lets through (rule 10)."""
        now = self._clock()
        for req in [r for r in self._waiting.values() if r.deadline <= now]:
            del self._waiting[req.rid]
            if req.load is not None:
                self._loads[req.load].waiters.remove(req)
            else:
                self._queued.remove(req)
            config = self._models[req.model]
            verdict, estimate = self._arrival(config, False, False, explain=True)
            if verdict.decision is Decision.GRANT:
                estimate = None
            self._refuse(req, errors.queue_timeout(req.model, config.queue_timeout, estimate))
        self._drain()
        self._after(ticked=True)

    def refuse_queued(self, model: str, error: ProxyError) -> None:
        """Refuse every request queued for ``model`` with ``error`` (its crash-loop backoff
        began: none of them may start it again)."""
        for req in [r for r in self._queued if r.model == model]:
            self._queued.remove(req)
            del self._waiting[req.rid]
            self._refuse(req, error)
        self._after()

    def shutdown(self, refusal: Callable[[], ProxyError] = errors.shutting_down) -> None:
        """Refuse every waiting request with 503 at once; from now on refuse everything.

        Args:
            refusal: makes the error each refused request gets (a configuration reload uses
                :func:`~llama_swap_trio.errors.config_reloaded`).
        """
        self._closing = True
        self._refusal = refusal
        waiting = [r for load in self._loads.values() for r in load.waiters] + self._queued
        for load in self._loads.values():
            load.waiters = []
        self._queued = []
        for req in waiting:
            del self._waiting[req.rid]
            self._refuse(req, refusal())
        self._after()

    # ---------------------------------------------------------------- internals

    def _release(self, model: str) -> None:
        if self._admitted[model] > 1:
            self._admitted[model] -= 1
        else:
            del self._admitted[model]

    def _refuse(self, req: _Request, error: ProxyError) -> None:
        self._release(req.model)
        self._effects.refuse(req.rid, error)

    def _used(self, model: str) -> None:
        self._tick += 1
        self._last_used[model] = self._tick

    def _grant(self, req: _Request, load_seconds: float) -> None:
        self._used(req.model)
        if not req.hold:  # rule 14: granted, but never in flight
            self._effects.grant(req.rid, req.model, load_seconds)
            self._release(req.model)
            return
        if self._effects.grant(req.rid, req.model, load_seconds):
            self._granted[req.rid] = req.model
            self._in_flight[req.model] += 1
            self._effects.in_flight_changed(req.model, self._in_flight[req.model])
        else:
            self._release(req.model)  # the handler is gone: no serve_done will follow

    def _enqueue(self, req: _Request) -> None:
        """Insert before the first request of strictly lower priority (rule 5)."""
        index = next(
            (i for i, r in enumerate(self._queued) if r.priority < req.priority),
            len(self._queued),
        )
        self._queued.insert(index, req)
        self._waiting[req.rid] = req

    def _act(self, req: _Request, verdict: Verdict) -> None:
        decision = verdict.decision
        if decision is Decision.GRANT:
            self._grant(req, 0.0)
            return
        if decision is Decision.REFUSE:
            assert verdict.error is not None
            self._refuse(req, verdict.error)
            return
        if decision is Decision.JOIN:
            load = self._loads[req.model]
        else:
            assert decision is Decision.START
            running = self.running()
            evict = self._swapper.evictions(req.model, running)
            load = self._loads[req.model] = _Load(req.model, evict, [], started=self._clock())
            self._used(req.model)
            self._ready.difference_update(evict)
            self._effects.start_load(req.model, evict, self._swapper.explain(req.model, running))
        load.waiters.append(req)
        req.load = req.model
        self._waiting[req.rid] = req
        self._effects.progress(req.rid, Progress("loading", evict=tuple(sorted(load.evict))))

    def _try_queued(self, req: _Request) -> bool:
        verdict = self._verdict(req.model, req.force, req.explicit)
        if verdict.decision is Decision.QUEUE:
            return False
        self._queued.remove(req)
        del self._waiting[req.rid]
        self._act(req, verdict)
        return True

    def _drain(self, first: str | None = None) -> None:
        """Rule 5: serve what the queue can serve now, same-model requests together."""
        if first is not None:
            for req in [r for r in self._queued if r.model == first]:
                self._try_queued(req)
        progressed = True
        while progressed:
            progressed = False
            for req in list(self._queued):
                if req not in self._queued:
                    continue  # left the queue earlier in this pass
                if self._try_queued(req):
                    progressed = True
                    for other in [r for r in self._queued if r.model == req.model]:
                        self._try_queued(other)

    def _after(self, *, ticked: bool = False) -> None:
        """Tell what changed in the queue: the queue event and each request's new position."""
        if self._queued or self._told_queue:
            # The reasons are worked out only when the queue itself changed (or at a tick): a
            # request to a ready model with others queued stays cheap. /api/queue is always
            # worked out afresh.
            shape = tuple((r.model, i) for i, r in enumerate(self._queued, start=1))
            if shape != self._told_shape or ticked:
                queue = self.queue()
                told = tuple((e.model, e.position, e.reason) for e in queue)
                self._told_shape = shape
                if told != self._told_queue:
                    self._told_queue = told
                    self._effects.queue_changed(queue)
        for position, req in enumerate(self._queued, start=1):
            if req.position != position:
                req.position = position
                self._effects.progress(req.rid, Progress("queued", position=position))
