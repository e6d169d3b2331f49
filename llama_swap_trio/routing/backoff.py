"""Crash-loop backoff (SPEC 6.4): a model whose starts keep failing is left alone for a while.

After :data:`FAILURES_BEFORE_BACKOFF` failed starts in a row (an exit before ready, or a health
timeout), the model is in ``backoff`` for a cooldown: :data:`FIRST_COOLDOWN` seconds, doubling
with every further failure, at most :data:`MAX_COOLDOWN`. Requests for it are refused at once
(503 ``model_backoff`` with ``Retry-After`` and the last failure's message) instead of each one
waiting for a start that will fail again.

The cooldown's end lets the next request try again; a failure then doubles the cooldown, a
success forgets the failures. An API load or a reload that changes the model forgets them at
once (a person asked for a fresh try). Pure: the caller passes the time (trio's clock).
"""

from __future__ import annotations

import math

import attrs

FAILURES_BEFORE_BACKOFF = 3
FIRST_COOLDOWN = 10.0
MAX_COOLDOWN = 300.0

#: start failures that count: the server ran and failed, so the next try will most likely too
COUNTED_REASONS = frozenset({"exited", "timeout"})


@attrs.define
class _Record:
    failures: int = 0
    until: float = 0.0
    message: str = ""


class Backoff:
    """Consecutive failed starts per model, and the cooldown they earned."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    def failed(self, model: str, now: float, message: str) -> float | None:
        """A start of ``model`` failed; the cooldown it enters now (seconds), or None."""
        record = self._records.setdefault(model, _Record())
        record.failures += 1
        record.message = message
        extra = record.failures - FAILURES_BEFORE_BACKOFF
        if extra < 0:
            return None
        cooldown = min(FIRST_COOLDOWN * 2.0**extra, MAX_COOLDOWN)
        record.until = now + cooldown
        return cooldown

    def succeeded(self, model: str) -> None:
        self._records.pop(model, None)

    def forget(self, model: str) -> bool:
        """An API load or a reload: a fresh start. True if ``model`` was in backoff."""
        record = self._records.pop(model, None)
        return record is not None and record.until > 0

    def expire(self, model: str, now: float) -> bool:
        """The cooldown timer fired: True if it ended the backoff (the failures are kept, so the
        next failure backs off again, twice as long)."""
        record = self._records.get(model)
        if record is None or record.until == 0.0 or record.until > now:
            return False
        record.until = 0.0
        return True

    def active(self, model: str, now: float) -> bool:
        record = self._records.get(model)
        return record is not None and record.until > now

    def retry_after(self, model: str, now: float) -> int:
        """Whole seconds until the cooldown ends (at least 1)."""
        record = self._records.get(model)
        left = record.until - now if record is not None else 0.0
        return max(1, math.ceil(left))

    def failures(self, model: str) -> int:
        record = self._records.get(model)
        return record.failures if record is not None else 0

    def message(self, model: str) -> str:
        record = self._records.get(model)
        return record.message if record is not None else ""
