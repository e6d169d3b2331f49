"""What a request would get, and why each waiting request waits (``/api/plan``, ``/api/queue``).

The values here are filled by :meth:`Scheduler.plan <.scheduler.Scheduler.plan>` and
:meth:`Scheduler.waiting_requests <.scheduler.Scheduler.waiting_requests>`, which run the same
decision functions a request runs (ARCHITECTURE rule 1); this module only holds their shapes,
words them (:func:`explain`) and renders the JSON of SPEC 6.5. Pure: no trio, no I/O.
"""

from __future__ import annotations

import attrs

from llama_swap_trio.errors import ProxyError


@attrs.frozen
class Blocker:
    """A model a request waits on (or is refused for)."""

    model: str
    in_flight: int
    #: ``in_flight``, ``loading``, ``stopping``, ``min_residency``, ``starvation_guard``,
    #: ``protected`` (or ``memory``, from a memory-aware swapper)
    reason: str


@attrs.frozen
class Plan:
    model: str
    #: the scheduler's view of the model: stopped, starting, ready, stopping
    state: str
    #: ``grant``, ``join``, ``queue``, ``start`` or ``refuse``, and the rule that said so
    decision: str
    rule: str
    #: for ``queue``: what it waits for, as ``/api/queue`` says it
    reason: str
    would_evict: tuple[str, ...]
    blocked_by: tuple[Blocker, ...]
    queue_ahead: int
    #: seconds; None when a load it needs was never measured (or it would be refused)
    estimated_wait: float | None
    #: the refusal a request would get, for ``refuse``
    error: ProxyError | None
    #: seconds the oldest queued request has waited (None: nothing queued)
    oldest_wait: float | None
    #: the swapper's own words on what loading the model would evict
    swapper: str
    explanation: str

    def to_json(self) -> dict[str, object]:
        """The body of ``GET /api/plan/{model}`` (SPEC 6.5)."""
        wait = self.estimated_wait
        return {
            "model": self.model,
            "state": self.state,
            "would_evict": list(self.would_evict),
            "blocked_by": [
                {"model": b.model, "in_flight": b.in_flight, "reason": b.reason}
                for b in self.blocked_by
            ],
            "queue_ahead": self.queue_ahead,
            "estimated_wait_ms": None if wait is None else round(wait * 1000),
            "explanation": self.explanation,
        }


@attrs.frozen
class WaitingRequest:
    """One waiting request, as ``GET /api/queue`` lists it."""

    #: its place in the queue (1 = next); 0 for a request that waits for a load under way
    position: int
    rid: int
    model: str
    #: seconds since it came in
    waited: float
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.rid),
            "model": self.model,
            "position": self.position,
            "waited_ms": round(self.waited * 1000),
            "reason": self.reason,
        }


def _names(models: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"'{m}'" for m in models) or "nothing"


def _blockers(plan: Plan, reason: str) -> list[Blocker]:
    return [b for b in plan.blocked_by if b.reason == reason]


def _waits(plan: Plan) -> str:
    """Why a queued request waits, in words."""
    parts: list[str] = []
    for b in _blockers(plan, "starvation_guard"):
        waited = plan.oldest_wait or 0.0
        parts.append(
            f"the request for '{b.model}' has waited {waited:.1f} s, past starvation_after: "
            f"requests for the models its load evicts queue behind it until that load happens"
        )
    busy = _blockers(plan, "in_flight")
    if busy:
        counts = ", ".join(f"'{b.model}' ({b.in_flight} in flight)" for b in busy)
        parts.append(f"it must evict {counts} and waits for those requests to finish")
    young = _blockers(plan, "min_residency")
    if young:
        parts.append(f"{_names([b.model for b in young])} loaded less than min_residency ago")
    moving = [b for b in plan.blocked_by if b.reason in ("loading", "stopping")]
    if moving:
        what = ", ".join(f"'{b.model}' {b.reason}" for b in moving)
        parts.append(f"it waits for {what}")
    if plan.queue_ahead:
        parts.append(f"{plan.queue_ahead} queued request(s) ahead of it")
    return "; ".join(parts) or "it waits for its turn"


def explain(plan: Plan) -> str:
    """One paragraph: what a request for ``plan.model`` would get now, and why."""
    head = f"'{plan.model}' is {plan.state}: "
    wait = plan.estimated_wait
    eta = "" if wait is None else f" (estimated wait {wait:.1f} s)"
    match plan.decision:
        case "grant":
            body = "a request is served at once"
        case "join":
            body = f"a request joins the load under way{eta}"
        case "start":
            body = f"a request starts loading it now, evicting {_names(plan.would_evict)}{eta}"
        case "queue":
            body = f"a request waits: {_waits(plan)}{eta}"
        case _:
            message = plan.error.message if plan.error is not None else plan.rule
            body = f"a request is refused: {message}"
    return f"{head}{body}. Rule: {plan.rule}. {plan.swapper}"
