"""Which target a selector picks (SPEC 6.6, llama-swap's ``warm``, ``pin`` and ``spillover``).

Pure: the caller passes each target's current view (its state for a local model, None for a
peer's) and the counts of requests this selector routed that are still running; nothing here
awaits, reads a clock or touches the router, so the rules are tested as plain functions.

- ``pin``: always the first target.
- ``warm``: the first target that is ``ready``; else the first that is ``starting``; else the
  first target (which then starts cold).
- ``spillover``: targets fill up in order. A local target that is stopping or shut down is
  skipped; one that is ready or starting, or has requests from this selector, is *active*; a
  stopped one is *cold*. A peer's model is active while it has requests, else cold. The first
  active target (in config order) with fewer than ``spillover`` requests takes the request; when
  every active target is full, the first cold one is started; with none left, the least busy
  active target takes it anyway (ties round-robin). With no active target, the first cold one.
  So, as the brief and llama-swap's example describe it, the first target takes requests until it
  has ``spillover`` in flight, then the next one starts. (llama-swap's code balances requests
  among active targets that are below the limit; filling in order keeps the next model's memory
  free until it is really needed, and makes the choice predictable.)
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from llama_swap_trio.config.parity_model import SelectorConfig

#: local states that count as active (running, or on the way to it)
_ACTIVE = frozenset({"ready", "starting"})
#: local states a spillover never picks: the model is going away
_SKIPPED = frozenset({"stopping", "shutdown"})


@attrs.frozen
class TargetView:
    #: the target's key (a model id, or a peer model's qualified name)
    key: str
    #: a local model's state (``str(UpstreamState)``); None for a peer's model
    state: str | None
    #: requests this selector routed to it that are still running
    in_flight: int = 0


def choose(
    selector: SelectorConfig, targets: Sequence[TargetView], turn: int = 0
) -> TargetView | None:
    """The target ``selector`` sends the next request to; None when none is available.

    Args:
        targets: one view per configured target, in config order.
        turn: a counter the caller increments per request; breaks ties among equally busy
            active spillover targets round-robin.
    """
    if not targets:
        return None
    if selector.strategy == "pin":
        return targets[0]
    if selector.strategy == "warm":
        for wanted in ("ready", "starting"):
            for target in targets:
                if target.state == wanted:
                    return target
        return targets[0]
    return _spillover(selector.spillover, targets, turn)


def _spillover(limit: int, targets: Sequence[TargetView], turn: int) -> TargetView | None:
    active: list[TargetView] = []
    cold: list[TargetView] = []
    for target in targets:
        if target.state in _SKIPPED:
            continue
        if target.in_flight > 0 or target.state in _ACTIVE:
            active.append(target)
        else:
            cold.append(target)
    for target in active:
        if target.in_flight < limit:
            return target
    if cold:
        return cold[0]
    if not active:
        return None
    fewest = min(target.in_flight for target in active)
    least_busy = [target for target in active if target.in_flight == fewest]
    return least_busy[turn % len(least_busy)]
