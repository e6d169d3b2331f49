"""Property tests of the memory rule (SPEC 6.7) on top of groups and the matrix.

Two levels. The pure swapper, with random sizes, running sets, in-flight counts and last uses:
after the evictions it plans, what stays fits in the budget; only models with nothing in flight
are evicted for memory unless those are not enough; they go least recently used first. Then the
scheduler, driven by random event sequences (the same driver as test_scheduler_properties): every
load that starts leaves the models that stay within the budget, evicts no busy model, picks its
memory evictions least recently used first, and every other promise of the scheduler still holds.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_swap_trio.config.memory import SleepConfig, parse_endpoint
from llama_swap_trio.config.model import Config, ModelConfig
from llama_swap_trio.routing.memory import MemorySwapper
from llama_swap_trio.routing.scheduler import Scheduler
from llama_swap_trio.routing.swappers import Swapper, swapper_for
from llama_swap_trio.upstream.api import UpstreamState

from .builders import group, group_config, matrix_config, single_group
from .test_scheduler_properties import Model, ops

GiB = 1024**3
BUDGET = 24 * GiB

BASES: dict[str, Config] = {
    # every model may run with every other as far as the groups go: memory alone decides
    "free": group_config(group("all", "a", "b", "c", "d", "e", swap=False, exclusive=False)),
    "groups": group_config(
        group("swap", "a", "b"),
        group("free", "c", "d", swap=False, exclusive=False),
        group("keep", "e", persistent=True, swap=False),
        priority={"e": 3},
    ),
    "matrix": matrix_config(
        ["a", "b", "c", "d", "e"],
        [("abc", {"a", "b", "c"}), ("cde", {"c", "d", "e"}), ("all", {"a", "b", "c", "d"})],
        costs={"c": 5},
    ),
    "single": single_group("a", "b", "c"),
    "protected": group_config(
        group("all", "a", "b", "c", "d", "e", swap=False, exclusive=False),
        settings={"c": {"protected": True}, "e": {"protected": True}},
    ),
}

sizes = st.fixed_dictionaries(
    {m: st.sampled_from([0, 4 * GiB, 6 * GiB, 8 * GiB, 10 * GiB, 20 * GiB]) for m in "abcde"}
)


SLEEP = SleepConfig(parse_endpoint("POST /sleep"), parse_endpoint("POST /wake_up"))


def with_sizes(config: Config, memory: dict[str, int], sleepers: str = "") -> Config:
    """Sizes for the models; those in ``sleepers`` get a sleep mode keeping 2 GiB (or less)."""
    models: dict[str, ModelConfig] = {
        m: attrs.evolve(c, memory=memory[m] or None) for m, c in config.models.items()
    }
    for m in (m for m in sleepers if m in models):
        models[m] = attrs.evolve(models[m], sleep=SLEEP, sleep_memory=min(2 * GiB, memory[m]))
    return attrs.evolve(config, models=models, gpu_memory=BUDGET)


class FixedResidency:
    def __init__(self, in_flight: dict[str, int], last_used: dict[str, int]) -> None:
        self._in_flight = in_flight
        self._last_used = last_used

    def in_flight(self, model: str) -> int:
        return self._in_flight.get(model, 0)

    def last_used(self, model: str) -> int:
        return self._last_used.get(model, 0)

    def sleeping(self) -> frozenset[str]:
        return frozenset()


def held(swapper: MemorySwapper, models: frozenset[str]) -> int:
    return sum(swapper.size(m) for m in models)


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(["free", "free", *sorted(BASES)]),
    memory=sizes,
    running_order=st.lists(st.sampled_from("abcde"), unique=True),
    target=st.sampled_from("abcde"),
    busy=st.frozensets(st.sampled_from("abcde")),
    order=st.permutations("abcde"),
)
def test_the_plan_fits_evicts_idle_first_and_least_recently_used_first(
    base: str,
    memory: dict[str, int],
    running_order: list[str],
    target: str,
    busy: frozenset[str],
    order: list[str],
) -> None:
    config = with_sizes(BASES[base], memory)
    base_swapper: Swapper = swapper_for(config)
    swapper = MemorySwapper(base_swapper, config.models, BUDGET)
    last_used = {m: i + 1 for i, m in enumerate(order)}
    swapper.bind(FixedResidency(dict.fromkeys(busy, 1), last_used))
    # a consistent starting point: what runs already fits
    running: frozenset[str] = frozenset()
    for m in running_order:
        if held(swapper, running | {m}) <= BUDGET:
            running |= {m}
    outside = [m for m in order if m not in running]
    if target in running and outside and order[0] != target:
        target = outside[0]  # mostly a load of a model that does not run yet
    plan = swapper.plan(target, running)
    base_evict = base_swapper.evictions(target, running)
    assert base_evict <= plan.evict
    assert target not in plan.evict
    if target in running:
        assert plan.evict == base_evict
        return
    stays = (running - plan.evict) | {target}
    assert held(swapper, stays) <= BUDGET, "over budget after the load"
    # memory evictions: idle ones first, least recently used first; busy ones only when the
    # idle ones were not enough, and then the load must wait for them (plan.busy)
    picked = list(plan.for_memory)
    models = config.models
    kept = [m for m in running - plan.evict - {target} if swapper.size(m)]
    idle_kept = [m for m in kept if m not in busy and not models[m].protected]
    for m in picked:
        if models[m].protected:
            # protected ones last: the scheduler refuses such a load (409 model_protected)
            assert all(models[k].protected for k in kept), f"protected {m} before {kept}"
        elif m in busy:
            assert not idle_kept, f"busy {m} evicted while idle {idle_kept} stay"
        else:
            assert all(last_used[m] < last_used[k] for k in idle_kept), (m, idle_kept)
    assert plan.busy == frozenset(m for m in picked if m in busy and not models[m].protected)
    # no eviction beyond need: without the last pick it would not fit
    if picked:
        without_last = stays | {picked[-1]}
        assert held(swapper, without_last) > BUDGET


class MemoryModel(Model):
    """The scheduler driver of test_scheduler_properties with the memory rule switched on."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        h = self.h
        base = swapper_for(config)
        assert config.gpu_memory is not None
        swapper = MemorySwapper(base, config.models, config.gpu_memory)
        h.swapper = swapper
        h.s = Scheduler(config.models, swapper, h.fx)
        swapper.bind(h.s)
        checked_start = h.fx.start_load  # the driver's own checks (no busy model evicted)

        def start_load(target: str, evict: frozenset[str], explanation: str) -> None:
            s = h.s
            # as it was decided: the load is registered now, so the sleepers it evicts (to stop
            # them) already count as stopping, but they were asleep, not running, when decided
            evicted_sleepers = evict & s.sleeping()
            running = s.running() - {target} - evicted_sleepers
            stays = (running - evict) | {target}
            plan = swapper.plan(target, running)
            sleeping = [m for m in s.sleeping() if m not in running and m not in evict]
            sleeping += [m for m in evict & running if swapper.can_sleep(m) and m not in plan.stop]
            after = held(swapper, stays) + sum(swapper.asleep(m) for m in sleeping)
            assert after <= BUDGET, f"load of {target} leaves {stays} and {sleeping} over budget"
            assert plan.evict == evict
            kept_idle = [m for m in running - evict if s.in_flight(m) == 0 and swapper.size(m) > 0]
            for m in plan.for_memory:
                assert s.in_flight(m) == 0
                # protected ones only for a forced API load (the driver checks that)
                if config.models[m].protected:
                    continue
                assert all(s.last_used(m) < s.last_used(k) for k in kept_idle), (m, kept_idle)
            assert "memory: budget=24.0GiB" in explanation
            checked_start(target, evict, explanation)

        h.fx.start_load = start_load  # type: ignore[method-assign]
        self._deliver_sleep_notices(swapper)

    def _deliver_sleep_notices(self, swapper: MemorySwapper) -> None:
        """What the upstreams would report before a load's or a stop's result: an evicted model
        with a sleep mode went to sleep (unless told to stop), a sleeper that was evicted,
        unloaded or woken is no longer asleep."""
        s = self.h.s
        loads: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        recorded_start = self.h.fx.start_load

        def start_load(target: str, evict: frozenset[str], explanation: str) -> None:
            loads[target] = (evict, swapper.plan(target, s.running() - {target}).stop)
            recorded_start(target, evict, explanation)

        load_done, stop_done = s.load_done, s.stop_done

        def notify_load_done(target: str, *args: Any, **kwargs: Any) -> None:
            evict, stop = loads.pop(target, (frozenset(), frozenset()))
            s.upstream_sleeping(target, False)
            for m in sorted(evict):
                asleep = m not in s.sleeping() and swapper.can_sleep(m) and m not in stop
                s.upstream_sleeping(m, asleep)
            load_done(target, *args, **kwargs)

        def notify_stop_done(models: Any) -> None:
            models = list(models)
            for m in models:
                s.upstream_sleeping(m, False)
            stop_done(models)

        self.h.fx.start_load = start_load  # type: ignore[method-assign]
        s.load_done = notify_load_done  # type: ignore[method-assign]
        s.stop_done = notify_stop_done  # type: ignore[method-assign]

    def check(self) -> None:
        super().check()
        s = self.h.s
        swapper = self.h.swapper
        assert isinstance(swapper, MemorySwapper)
        active = frozenset(
            m for m in self.models if s.state(m) in (UpstreamState.READY, UpstreamState.STARTING)
        )
        # a sleeper a load under way evicts is stopped before its target starts, as an evicted
        # running model is (which the active set leaves out too)
        evicting = frozenset().union(*s.loads().values())
        asleep = sum(swapper.asleep(m) for m in s.sleeping() - evicting if m not in active)
        assert held(swapper, active) + asleep <= BUDGET, f"{active} over budget"


@settings(max_examples=250, deadline=None)
@given(
    base=st.sampled_from(["free", "free", *sorted(BASES)]),
    memory=sizes,
    sleepers=st.sampled_from(["", "", "a", "ac", "abcde"]),
    steps=ops,
)
def test_random_event_sequences_never_go_over_budget(
    base: str, memory: dict[str, int], sleepers: str, steps: list[tuple[str, int]]
) -> None:
    model = MemoryModel(with_sizes(BASES[base], memory, sleepers))
    for op, n in steps:
        model.step(op, n)
    model.finish()
