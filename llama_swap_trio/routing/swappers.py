"""Eviction policies: "which running models must stop so that ``target`` can run?" (SPEC 2.3).

A swapper is a pure function of its config and two arguments: the target and the set of models
that are running (every model not stopped, plus the targets of loads already under way; the
scheduler assembles it). It never looks at processes, never logs and never mutates anything,
because the scheduler asks it speculatively, for every queued request on every drain; most answers
never become a swap. ``explain`` says the same thing in words for the one log line the router
writes when a load really starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from llama_swap_trio.config.model import (
    DEFAULT_GROUP,
    Config,
    GroupConfig,
    MatrixConfig,
    MatrixSet,
    ModelConfig,
)


class Swapper(Protocol):
    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]:
        """The models of ``running`` that must stop before ``target`` starts (never ``target``)."""
        ...

    def explain(self, target: str, running: frozenset[str]) -> str:
        """One human line: what :meth:`evictions` would evict and why. No side effects."""
        ...


def _names(models: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(models)) + "]"


class GroupSwapper:
    """Groups: loading T of group G evicts running M when

    1. M is in G and ``G.swap``; or
    2. M is in another group H, ``G.exclusive`` and not ``H.persistent``.

    Everything else is kept. So a non-exclusive target never unloads other groups (even exclusive
    ones), and ``persistent`` only shields against other groups, never against ``swap`` inside.
    """

    def __init__(self, models: Mapping[str, ModelConfig], groups: Mapping[str, GroupConfig]):
        self._group_of = {model_id: model.group for model_id, model in models.items()}
        self._groups = dict(groups)

    def _group(self, model_id: str) -> GroupConfig:
        name = self._group_of.get(model_id, DEFAULT_GROUP)
        group = self._groups.get(name)
        if group is None:
            # a config without [routing.groups]: the implicit group (swap, exclusive)
            return GroupConfig(name=name, members=(model_id,))
        return group

    def _reason(self, target: GroupConfig, other: str) -> str | None:
        """Why ``other`` is evicted for a target of group ``target``, or None when kept."""
        group = self._group(other)
        if group.name == target.name:
            return f"same group {group.name!r}, swap=true" if target.swap else None
        if target.exclusive and not group.persistent:
            return f"group {group.name!r}; {target.name!r} is exclusive"
        return None

    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]:
        group = self._group(target)
        return frozenset(m for m in running if m != target and self._reason(group, m) is not None)

    def explain(self, target: str, running: frozenset[str]) -> str:
        group = self._group(target)
        evicted: list[str] = []
        kept: list[str] = []
        for m in sorted(running - {target}):
            reason = self._reason(group, m)
            if reason is None:
                kept.append(m)
            else:
                evicted.append(f"{m} ({reason})")
        flags = f"swap={str(group.swap).lower()} exclusive={str(group.exclusive).lower()}"
        return (
            f"group: model={target} group={group.name!r} {flags} "
            f"evict=[{', '.join(evicted)}] keep={_names(kept)}"
        )


class MatrixSwapper:
    """Matrix: the target runs with the cheapest-to-keep expanded set that contains it.

    1. target already running: evict nothing;
    2. else among the expanded sets containing the target, pick the one whose complement in
       ``running`` costs least to evict (``evict_costs``, default 1); ties go to the earliest set
       in solver order (only a strictly lower cost replaces the best so far);
    3. a target in no set runs alone: evict everything.
    """

    def __init__(self, matrix: MatrixConfig) -> None:
        self._sets = matrix.sets
        self._costs = matrix.evict_costs

    def _cost(self, models: Iterable[str]) -> int:
        return sum(self._costs.get(m, 1) for m in models)

    def _solve(self, target: str, running: frozenset[str]) -> tuple[MatrixSet | None, int]:
        best: MatrixSet | None = None
        best_cost = 0
        for candidate in self._sets:
            if target not in candidate.models:
                continue
            cost = self._cost(running - candidate.models)
            if best is None or cost < best_cost:
                best, best_cost = candidate, cost
        return best, best_cost

    def evictions(self, target: str, running: frozenset[str]) -> frozenset[str]:
        if target in running:
            return frozenset()
        best, _ = self._solve(target, running)
        if best is None:
            return running - {target}
        return running - best.models

    def explain(self, target: str, running: frozenset[str]) -> str:
        if target in running:
            return f"matrix: model={target} already running, evict=[]"
        best, cost = self._solve(target, running)
        if best is None:
            evict = running - {target}
            return (
                f"matrix: model={target} is in no set and runs alone, "
                f"evict={_names(evict)} cost={self._cost(evict)}"
            )
        return (
            f"matrix: model={target} set={best.name} dsl={best.dsl!r} "
            f"evict={_names(running - best.models)} cost={cost}"
        )


def swapper_for(config: Config) -> GroupSwapper | MatrixSwapper:
    """The swapper the config asks for (``routing.router``)."""
    routing = config.routing
    if routing.router == "matrix":
        if routing.matrix is None:
            raise ValueError("routing.router is 'matrix' but the config has no [routing.matrix]")
        return MatrixSwapper(routing.matrix)
    return GroupSwapper(config.models, routing.groups)
