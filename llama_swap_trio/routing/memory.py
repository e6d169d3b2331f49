"""The memory rule (SPEC 6.7): a load also evicts until the sizes fit in ``[resources] gpu_memory``.

:class:`MemorySwapper` wraps the group or matrix swapper. It is pure like them: the target, the
running set and a :class:`Residency` view (in flight, last use, sleepers, measured sizes) in; the
models to evict out. The rules, numbered for tests and comments:

1. The base rules (group or matrix) evict first; then, with a budget, the memory rule adds
   evictions while ``memory held by what stays + the target's size > budget``.
2. What a model holds: its declared ``memory``; a ``"measured"`` model its measured maximum, or the
   whole budget until it has been measured (so it runs alone until then); a model without
   ``memory`` nothing; a sleeping model its ``sleep_memory``; a model the target is already
   running as holds what it holds (a running target needs nothing more).
3. Candidates, least recently used first (ties by id): models with nothing in flight and not
   ``protected`` (sleepers among them); only then models with requests in flight (the scheduler
   makes the load wait for them: queue reason ``memory``), and last protected ones (the scheduler
   refuses such a load with 409 ``model_protected``). So a load that starts never evicts a busy or
   protected model for memory.
4. An evicted model with a sleep mode goes to sleep and keeps ``sleep_memory``; when that leftover
   still does not fit once every candidate is evicted, such models are stopped instead (least
   recently used first) until it does. :meth:`MemorySwapper.plan` says which.
5. A model the memory rule cannot help with (``memory`` larger than the budget) is refused by the
   config check; so with every candidate evicted the target always fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import attrs

from llama_swap_trio.config.memory import MEASURED, format_size
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.routing.swappers import Swapper


class Residency(Protocol):
    """What the memory rule reads of the scheduler's state (and of the measurements)."""

    def in_flight(self, model: str) -> int: ...

    def last_used(self, model: str) -> int:
        """A tick that grows with every use (grant, end of a request, load); 0 = never used."""
        ...

    def sleeping(self) -> frozenset[str]: ...


class Measured(Protocol):
    def measured(self, model: str) -> int | None:
        """The largest GPU memory seen for a ``"measured"`` model, or None before a reading."""
        ...


class _NoneMeasured:
    def measured(self, model: str) -> int | None:
        return None


class _Idle:
    """A residency view for a swapper not (yet) bound to a scheduler: all idle, never used."""

    def in_flight(self, model: str) -> int:
        return 0

    def last_used(self, model: str) -> int:
        return 0

    def sleeping(self) -> frozenset[str]:
        return frozenset()


@attrs.frozen
class MemoryPlan:
    """The memory rule's answer for one target."""

    #: every eviction (base rules and memory)
    evict: frozenset[str]
    #: evicted for memory only, in the order they were picked
    for_memory: tuple[str, ...]
    #: evicted models that must stop although they could sleep (rule 4)
    stop: frozenset[str]
    #: evicted for memory although requests are in flight (not protected): the load waits
    busy: frozenset[str]
    #: bytes held once the load is done (the target included)
    used_after: int
    #: bytes the target needs
    need: int


def model_size(model: ModelConfig | None, budget: int | None, measured: int | None) -> int:
    """Bytes a running model holds for the memory rule (rule 2): declared, measured, the whole
    budget while a ``"measured"`` one has no figure yet (0 without a budget), or 0 unset."""
    if model is None or model.memory is None:
        return 0
    if model.memory == MEASURED:
        if measured is None:
            return budget or 0
        return measured if budget is None else min(measured, budget)
    assert isinstance(model.memory, int)
    return model.memory


def _protected(model: ModelConfig | None) -> bool:
    return model is not None and model.protected


class MemorySwapper:
    """The base swapper plus the memory rule (see the module docstring)."""

    def __init__(
        self,
        base: Swapper,
        models: Mapping[str, ModelConfig],
        budget: int,
        measured: Measured | None = None,
    ) -> None:
        self._base = base
        self._models = models
        self.budget = budget
        self._measured: Measured = measured or _NoneMeasured()
        self._residency: Residency = _Idle()

    def bind(self, residency: Residency, measured: Measured | None = None) -> None:
        """Read in-flight counts, last uses and sleepers from ``residency`` (the scheduler)."""
        self._residency = residency
        if measured is not None:
            self._measured = measured

    # -- sizes -------------------------------------------------------------------------------

    def size(self, model: str) -> int:
        """What ``model`` holds while it runs (rule 2)."""
        return model_size(self._models.get(model), self.budget, self._measured.measured(model))

    def asleep(self, model: str) -> int:
        config = self._models.get(model)
        return 0 if config is None else min(config.sleep_memory, self.size(model))

    def can_sleep(self, model: str) -> bool:
        config = self._models.get(model)
        return config is not None and config.sleep is not None

    def used(self, running: Iterable[str]) -> int:
        """Bytes held by ``running`` and by the sleepers (those not in ``running``)."""
        running = frozenset(running)
        sleepers = self._residency.sleeping() - running
        return sum(self.size(m) for m in running) + sum(self.asleep(m) for m in sleepers)

    # -- the rule ----------------------------------------------------------------------------

    def _order(self, models: Iterable[str]) -> list[str]:
        residency = self._residency

        def key(model: str) -> tuple[int, int, str]:
            if _protected(self._models.get(model)):
                rank = 2
            elif residency.in_flight(model) > 0:
                rank = 1
            else:
                rank = 0
            return rank, residency.last_used(model), model

        return sorted(models, key=key)

    def plan(self, target: str, running: frozenset[str]) -> MemoryPlan:
        """The full answer (rules 1-4) for loading ``target`` next to ``running``."""
        base = self._base.evictions(target, running)
        if target in running:  # running already (ready or loading): it needs nothing more
            return MemoryPlan(base, (), frozenset(), frozenset(), self.used(running), 0)
        sleepers = self._residency.sleeping() - running - {target}
        kept = running - base - {target}
        need = self.size(target)
        # what each model holds now, and what evicting it leaves behind
        held = {m: self.size(m) for m in kept} | {m: self.asleep(m) for m in sleepers}
        left = {m: self.asleep(m) if self.can_sleep(m) else 0 for m in kept} | dict.fromkeys(
            sleepers, 0
        )
        # base evictions that go to sleep keep their sleep memory too
        sleeping_base = {m: self.asleep(m) for m in base if self.can_sleep(m)}
        used = sum(held.values()) + sum(sleeping_base.values())
        picked: list[str] = []
        for model in self._order(m for m in held if held[m] > left[m]):
            if used + need <= self.budget:
                break
            picked.append(model)
            used -= held[model] - left[model]
        stop: set[str] = set()
        # rule 4: leftovers of models put to sleep, least recently used first
        leftovers = {m: left[m] for m in picked if m not in sleepers and left[m] > 0}
        leftovers.update(sleeping_base)
        for model in self._order(leftovers):
            if used + need <= self.budget:
                break
            stop.add(model)
            used -= leftovers[model]
        busy = frozenset(
            m
            for m in picked
            if self._residency.in_flight(m) > 0 and not _protected(self._models.get(m))
        )
        return MemoryPlan(
            base | frozenset(picked), tuple(picked), frozenset(stop), busy, used + need, need
        )

    # -- the Swapper protocol ----------------------------------------------------------------

    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]:
        return self.plan(target, running).evict

    def explain(self, target: str, running: frozenset[str]) -> str:
        plan = self.plan(target, running)
        text = (
            f"{self._base.explain(target, running)}; memory: budget={format_size(self.budget)} "
            f"need={format_size(plan.need)} after={format_size(plan.used_after)}"
        )
        if plan.for_memory:
            text += " evict for memory (least recently used first)=[" + ", ".join(plan.for_memory)
            text += "]"
        if plan.stop:
            text += " stop instead of sleep=[" + ", ".join(sorted(plan.stop)) + "]"
        return text

    def waits_for_memory(self, target: str, running: frozenset[str]) -> frozenset[str]:
        """Models with requests in flight that must be evicted for memory before ``target`` can
        load: the reason ``memory`` of a queued request (``/api/queue``)."""
        return self.plan(target, running).busy


def with_memory(base: Swapper, models: Mapping[str, ModelConfig], budget: int | None) -> Swapper:
    """``base`` with the memory rule on top when there is a budget, else ``base`` itself."""
    if budget is None:
        return base
    return MemorySwapper(base, models, budget)
