"""Property tests for the rules of SPEC 6.5 (scheduler rules 8-14), on the pure scheduler.

Two kinds:

- random event sequences (as in test_scheduler_properties.py) with time moving on, on configs
  that use every new key: on top of the old promises (every request ends exactly once, in-flight
  counts return to zero), no model is evicted before its ``min_residency``, and the plan for a
  model is exactly what a request for it then gets;
- a discrete-event simulation of random arrivals, request durations, load times and failures on
  two models that swap (the thrash case): with ``starvation_after`` = S, every request is served
  or refused within S + D + L + slack, D the longest request, L the longest load, and the slack
  one more D + L: a request may first have to wait for an older request of the other model to
  be served (which is itself bounded by S + D + L), then for that model's work to drain.
"""

from __future__ import annotations

import heapq
import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.upstream.api import UpstreamState

from .builders import group, group_config, single_group
from .recorder import Harness
from .test_scheduler_properties import OPS, Model


def with_routing(config: Config, **fields: float) -> Config:
    return attrs.evolve(config, routing=attrs.evolve(config.routing, **fields))


CONFIGS: dict[str, Config] = {
    "residency": with_routing(
        single_group(
            "a",
            "b",
            "c",
            priority={"c": 3},
            settings={
                "a": {"min_residency": 5.0, "queue_timeout": 12.0},
                "b": {"min_residency": 2.0, "protected": True},
                "c": {"autoload": False, "queue_timeout": 4.0},
            },
        ),
        starvation_after=6.0,
    ),
    "groups": with_routing(
        group_config(
            group("swap", "a", "b"),
            group("side", "c", "d", swap=False, exclusive=False),
            settings={
                "a": {"min_residency": 3.0},
                "c": {"queue_timeout": 2.5, "min_residency": 1.0},
                "d": {"autoload": False, "websockets_hold_model": False},
            },
        ),
        starvation_after=4.0,
    ),
}

TIME_OPS = (*OPS, "advance", "advance", "advance", "plan_request", "plan_request", "detached")


class TimedModel(Model):
    """The random-sequence driver of test_scheduler_properties.py, with a clock that moves."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.ready_at: dict[str, float] = {}
        fx = self.h.fx
        checked_start = fx.start_load

        def start_load(target: str, evict: frozenset[str], explanation: str) -> None:
            for m in evict:  # rule 10: no ready model is evicted before its min_residency
                if self.h.s.state(m) == UpstreamState.READY and m in self.ready_at:
                    resident = self.h.now - self.ready_at[m]
                    assert resident >= config.models[m].min_residency, (m, resident)
            checked_start(target, evict, explanation)

        fx.start_load = start_load  # type: ignore[method-assign]

    def step(self, op: str, n: int) -> None:
        h, s = self.h, self.h.s
        if op == "advance":
            h.advance((n % 40) / 10)
            self.check()
        elif op == "plan_request":
            self.plan_then_request(str(self.pick(self.models, n)))
            self.check()
        elif op == "detached":
            self.requested.append(h.req(str(self.pick(self.models, n)), hold=False))
            self.check()
        else:
            super().step(op, n)
        for m in self.models:  # when each model became ready, as the upstream would see it
            if s.state(m) == UpstreamState.READY:
                self.ready_at.setdefault(m, h.now)
            else:
                self.ready_at.pop(m, None)

    def plan_then_request(self, model: str) -> None:
        """The plan says what a request gets; then a request gets exactly that."""
        h, s, fx = self.h, self.h.s, self.h.fx
        plan = s.plan(model)
        loads = len(fx.loads)
        rid = h.req(model)
        self.requested.append(rid)
        if plan.decision == "grant":
            assert rid in fx.granted
        elif plan.decision == "refuse":
            assert plan.error is not None
            assert fx.refused[rid].code == plan.error.code
        elif plan.decision == "start":
            assert fx.loads[loads:] == [(model, frozenset(plan.would_evict))]
        else:
            assert len(fx.loads) == loads
            (mine,) = [w for w in s.waiting_requests() if w.rid == rid]
            if plan.decision == "join":
                assert (mine.position, mine.reason) == (0, "loading")
                assert set(plan.would_evict) == s.loads()[model]
            else:
                assert plan.decision == "queue"
                assert (mine.position, mine.reason) == (plan.queue_ahead + 1, plan.reason)
        assert len(fx.loads) - loads <= 1

    def finish(self) -> None:
        """Finish what is under way, letting every min_residency and queue timeout run out
        between the rounds; then the old checks: nothing may be left waiting."""
        s = self.h.s
        for _ in range(50):
            self.h.advance(100.0)
            if not (s.loads() or self.pending_stops or s.granted() or self.pending_cancels):
                break
            for target in sorted(s.loads()):
                s.load_done(target, None, 1.0)
            while self.pending_stops:
                s.stop_done(self.pending_stops.pop())
            for rid in sorted(s.granted()):
                s.serve_done(rid)
                self.done.add(rid)
            self.check()
        super().finish()


time_ops = st.lists(st.tuples(st.sampled_from(TIME_OPS), st.integers(0, 10_000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), steps=time_ops)
def test_random_sequences_with_time_keep_every_promise(
    name: str, steps: list[tuple[str, int]]
) -> None:
    model = TimedModel(CONFIGS[name])
    for op, n in steps:
        model.step(op, n)
    model.finish()
    fx = model.h.fx
    answered = set(fx.granted) | set(fx.refused) | set(fx.failed_grants) | model.done
    assert set(model.requested) <= answered, "a request never ended"


# -- the starvation bound, by simulation ---------------------------------------------------------


@attrs.frozen
class Arrival:
    at: float
    model: str
    duration: float


@st.composite
def arrivals(draw: st.DrawFn) -> list[Arrival]:
    """A steady stream for ``a`` whose requests overlap (so ``a`` is never idle: the case that
    starves ``b`` without the guard), and a few requests for ``b`` at random times in it."""
    found: list[Arrival] = []
    at = 0.0
    for gap in draw(st.lists(st.floats(0.05, 1.0), min_size=10, max_size=150)):
        at += gap
        found.append(Arrival(at, "a", draw(st.floats(0.5, 4.0))))
    for b_at in draw(st.lists(st.floats(0.0, at), min_size=1, max_size=5)):
        found.append(Arrival(b_at, "b", draw(st.floats(0.05, 4.0))))
    return found


@settings(max_examples=300, deadline=None)
@given(
    requests=arrivals(),
    load_times=st.lists(st.floats(0.1, 3.0, allow_nan=False), min_size=1, max_size=20),
    failures=st.lists(st.booleans(), min_size=1, max_size=20),
    starvation_after=st.floats(1.0, 10.0),
)
def test_with_starvation_after_every_request_ends_within_the_bound(
    requests: list[Arrival],
    load_times: list[float],
    failures: list[bool],
    starvation_after: float,
) -> None:
    h = Harness(with_routing(single_group("a", "b"), starvation_after=starvation_after))
    longest_request = max(r.duration for r in requests)
    longest_load = max(load_times)
    bound = starvation_after + longest_request + longest_load
    slack = longest_request + longest_load
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    loads = itertools.count()
    arrived: dict[int, float] = {}
    duration: dict[int, float] = {}
    ended: dict[int, float] = {}
    fx = h.fx
    grant, refuse, start_load = fx.grant, fx.refuse, fx.start_load

    def on_grant(rid: int, model: str, load_seconds: float) -> bool:
        assert grant(rid, model, load_seconds)
        ended[rid] = h.now
        heapq.heappush(events, (h.now + duration[rid], next(seq), "done", rid))
        return True

    def on_refuse(rid: int, error: errors.ProxyError) -> None:
        refuse(rid, error)
        ended[rid] = h.now

    def on_start(target: str, evict: frozenset[str], explanation: str) -> None:
        start_load(target, evict, explanation)
        i = next(loads)
        took = load_times[i % len(load_times)]
        heapq.heappush(events, (h.now + took, next(seq), "loaded", (target, i, took)))

    fx.grant, fx.refuse, fx.start_load = on_grant, on_refuse, on_start  # type: ignore[method-assign]
    for r in requests:
        heapq.heappush(events, (r.at, next(seq), "arrive", r))
    while events:
        at, _, kind, data = heapq.heappop(events)
        h.advance(at - h.now)
        if kind == "arrive":
            assert isinstance(data, Arrival)
            rid = h._next + 1
            arrived[rid] = h.now
            duration[rid] = data.duration
            assert h.req(data.model) == rid
        elif kind == "done":
            assert isinstance(data, int)
            h.s.serve_done(data)
        else:
            target, i, took = data  # type: ignore[misc]
            failed = failures[i % len(failures)]
            error = errors.upstream_error(target, "exited") if failed else None
            h.s.load_done(target, error, took)
    assert set(ended) == set(arrived), "a request never ended"
    for rid, at in arrived.items():
        waited = ended[rid] - at
        assert waited <= bound + slack + 1e-6, (rid, waited, bound, slack)
    assert not h.s.granted()
    assert h.s.in_flight("a") == h.s.in_flight("b") == 0
