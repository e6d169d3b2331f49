"""Property tests: random event sequences never break the scheduler's promises.

Every request ends exactly once (granted, refused or cancelled); in-flight counts never go
negative and return to zero; a model with requests in flight is never evicted or TTL-stopped;
the models ready or starting always satisfy the group/matrix rules; the queue keeps priority
order and holds only requests that truly must wait (which is what serves a model's requests
together); and once every load, stop and request is finished, nothing is left waiting.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.routing.scheduler import Decision
from llama_swap_trio.upstream.api import UpstreamState

from .builders import group, group_config, matrix_config, single_group
from .recorder import Harness

CONFIGS: dict[str, Config] = {
    "single": single_group("a", "b", "c", priority={"c": 5}, limits={"a": 3}),
    "groups": group_config(
        group("swap", "a", "b"),
        group("free", "c", "d", swap=False, exclusive=False),
        group("keep", "e", persistent=True),
        group("solo", "f", exclusive=False),
        priority={"e": 3, "d": -1},
        limits={"b": 2},
    ),
    "matrix": matrix_config(
        ["a", "b", "c", "d", "e"],
        [("ac", {"a", "c"}), ("bc", {"b", "c"}), ("cd", {"c", "d"})],
        costs={"c": 5},
        priority={"b": 2},
    ),
    "protected": group_config(
        group("swap", "a", "b", "c"),
        group("side", "d"),
        priority={"c": 2},
        settings={"a": {"protected": True}, "d": {"protected": True}},
    ),
}

OPS = (
    "request",
    "request",
    "request",
    "require_ready",
    "api_load",
    "force_load",
    "cancel",
    "depart",
    "deliver_cancel",
    "serve_done",
    "serve_done",
    "load_ok",
    "load_ok",
    "load_fail",
    "stop_done",
    "unload",
    "unload_all",
    "idle",
    "crash",
    "shutdown",
)


class Model:
    """Drives a Harness and checks the invariants after every step."""

    def __init__(self, config: Config) -> None:
        self.h = Harness(config)
        self.models = sorted(config.models)
        self.pending_stops: list[frozenset[str]] = []
        self.pending_cancels: list[int] = []
        self.served: Counter[int] = Counter()
        self.done: set[int] = set()
        self.requested: list[int] = []
        self.forced: set[int] = set()
        #: a forced request is being made right now (its load may start inside ``request``)
        self.forcing = False
        fx = self.h.fx
        original_start = fx.start_load

        def start_load(target: str, evict: frozenset[str], explanation: str) -> None:
            # a model with requests in flight is never evicted
            busy = {m for m in evict if self.h.s.in_flight(m) > 0}
            assert not busy, f"load of {target} evicts busy {busy}"
            assert target not in evict
            # a ready protected model is evicted only for a forced API load (rule 8)
            protected = {
                m
                for m in evict
                if self.h.config.models[m].protected and self.h.s.state(m) == UpstreamState.READY
            }
            if protected:
                assert self.forcing or self.forced & self.h.s.waiting(), (target, protected)
            original_start(target, evict, explanation)

        fx.start_load = start_load  # type: ignore[method-assign]

    def pick(self, items: list[int] | list[str], n: int) -> object:
        return items[n % len(items)]

    def step(self, op: str, n: int) -> None:
        h, s = self.h, self.h.s
        if op in ("request", "require_ready"):
            rid = h.req(str(self.pick(self.models, n)), require_ready=op == "require_ready")
            self.requested.append(rid)
        elif op in ("api_load", "force_load"):
            self.forcing = op == "force_load"
            rid = h.req(str(self.pick(self.models, n)), explicit=True, force=self.forcing)
            if self.forcing:
                self.forced.add(rid)
            self.forcing = False
            self.requested.append(rid)
        elif op == "cancel" and (live := sorted(s.waiting() | s.granted())):
            rid = int(str(self.pick(live, n)))
            s.cancel(rid)
            self.done.add(rid)
        elif op == "depart" and (waiting := sorted(s.waiting() - h.fx.gone)):
            rid = int(str(self.pick(waiting, n)))
            h.fx.gone.add(rid)  # the handler left; its cancel is still on its way
            self.pending_cancels.append(rid)
        elif op == "deliver_cancel" and self.pending_cancels:
            rid = self.pending_cancels.pop(n % len(self.pending_cancels))
            s.cancel(rid)
            self.done.add(rid)
        elif op == "serve_done" and (granted := sorted(s.granted())):
            rid = int(str(self.pick(granted, n)))
            s.serve_done(rid)
            self.done.add(rid)
        elif op in ("load_ok", "load_fail") and (loads := sorted(s.loads())):
            target = str(self.pick(loads, n))
            error = None if op == "load_ok" else errors.upstream_error(target, "exited")
            s.load_done(target, error, 1.0)
        elif op == "stop_done" and self.pending_stops:
            s.stop_done(self.pending_stops.pop(n % len(self.pending_stops)))
        elif op == "unload":
            self._stops(s.unload([str(self.pick(self.models, n))]))
        elif op == "unload_all" and n % 4 == 0:
            self._stops(s.unload(None))
        elif op == "idle":
            model = str(self.pick(self.models, n))
            if s.idle_expired(model):
                assert s.in_flight(model) == 0
                self._stops(frozenset({model}))
        elif op == "crash":
            model = str(self.pick(self.models, n))
            if s.state(model) == UpstreamState.READY:
                s.upstream_stopped(model)
        elif op == "shutdown" and n % 10 == 0:
            s.shutdown()
        self.check()

    def _stops(self, models: frozenset[str]) -> None:
        if models:
            self.pending_stops.append(models)

    def check(self) -> None:
        h, s, fx = self.h, self.h.s, self.h.fx
        # every request is answered at most once, and a waiting one not at all
        assert not set(fx.granted) & set(fx.refused)
        assert not s.waiting() & (set(fx.granted) | set(fx.refused) | set(fx.failed_grants))
        # in flight = granted and not done, per model; never negative
        live = Counter(fx.granted[r] for r in s.granted())
        for model in self.models:
            assert s.in_flight(model) == live[model] >= 0
            assert fx.in_flight.get(model, 0) == live[model]
        # the fast path of a request to a ready model decides as the decision table does
        for model in self.models:
            assert s.decide(model) == s.decide_by_table(model), model
        # the queue is in priority order, and holds only requests that must wait
        priorities = [h.config.models[e.model].priority for e in s.queue()]
        assert priorities == sorted(priorities, reverse=True)
        for entry in s.queue():
            # (an API load queues where a plain request would be refused: rules 8, 12)
            forced = s.decide(entry.model, force=True, explicit=True)[0]
            decisions = {s.decide(entry.model)[0], forced}
            assert Decision.QUEUE in decisions, entry
        # the models ready or starting satisfy the routing rules
        active = {
            m for m in self.models if s.state(m) in (UpstreamState.READY, UpstreamState.STARTING)
        }
        routing = h.config.routing
        if routing.router == "group":
            for g in routing.groups.values():
                if g.swap:
                    assert len(active & set(g.members)) <= 1, (g.name, active)
        else:
            assert routing.matrix is not None
            assert len(active) <= 1 or any(active <= ms.models for ms in routing.matrix.sets)

    def finish(self) -> None:
        """Finish everything under way; nothing may be left waiting."""
        s = self.h.s
        for rid in list(self.pending_cancels):
            s.cancel(rid)
            self.done.add(rid)
        self.pending_cancels.clear()
        for _ in range(200):
            if not (s.loads() or self.pending_stops or s.granted()):
                break
            for target in sorted(s.loads()):
                s.load_done(target, None, 1.0)
            while self.pending_stops:
                s.stop_done(self.pending_stops.pop())
            for rid in sorted(s.granted()):
                s.serve_done(rid)
            self.check()
        assert not s.waiting(), "requests left waiting with nothing under way"
        assert not s.granted()
        for model in self.models:
            assert s.in_flight(model) == 0
            assert s.admitted(model) == 0


ops = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10_000)), max_size=60)


@settings(max_examples=250, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), steps=ops)
def test_random_event_sequences_keep_every_promise(name: str, steps: list[tuple[str, int]]) -> None:
    model = Model(CONFIGS[name])
    for op, n in steps:
        model.step(op, n)
    model.finish()
    fx = model.h.fx
    answered = set(fx.granted) | set(fx.refused) | set(fx.failed_grants) | model.done
    assert set(model.requested) <= answered, "a request never ended"
