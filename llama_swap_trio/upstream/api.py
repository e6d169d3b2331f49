"""What the rest of the daemon sees of an upstream: its states and the notices it sends.

The :class:`~llama_swap_trio.upstream.Upstream` is the single writer of its own state; everybody
else reads it (``upstream.state``) or listens to the notices below. The router is the only caller
of ``start``/``stop``: an upstream never decides to stop itself, it only reports (``IdleExpired``;
``StateChanged`` to ``stopping`` with the error as soon as a ready process exits by itself, then to
``stopped`` once its group is gone), so scheduling decisions are never taken on a stale view
(llama-swap #946).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Literal, Protocol

import attrs

from llama_swap_trio.config.model import ModelConfig


class UpstreamState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"
    #: crash-loop backoff (SPEC 6.4): the router refuses requests for a while; no process runs
    BACKOFF = "backoff"
    #: the process lives on with its GPU memory freed (SPEC 6.7); a start wakes it
    SLEEPING = "sleeping"


class StartFailed(Exception):
    """A start that did not reach ``ready``.

    Attributes:
        model: the model id.
        reason: ``"spawn"`` (the command could not run), ``"exited"`` (it exited before it was
            healthy), ``"timeout"`` (not healthy within ``health_check_timeout``), ``"port"``
            (another process already answers on the model's port) or ``"cancelled"`` (the start
            was stopped: unload or shutdown).
        output: the last lines the upstream printed (at most 2 KB).
    """

    def __init__(self, model: str, reason: str, message: str, output: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason
        self.message = message
        self.output = output

    def __str__(self) -> str:
        if self.output:
            return f"{self.message}; last output:\n{self.output}"
        return self.message


@attrs.frozen
class StateChanged:
    model: str
    state: UpstreamState
    previous: UpstreamState
    #: wall-clock unix seconds
    at: float
    error: str | None = None
    #: why a ready model is stopping when nobody asked for it: ``"health"`` (wedged)
    reason: str | None = None


@attrs.frozen
class LogLine:
    model: str
    stream: Literal["stdout", "stderr"]
    line: str


@attrs.frozen
class IdleExpired:
    """The model has been idle (no request in flight) for its ``ttl``. The router decides."""

    model: str


UpstreamEvent = StateChanged | LogLine | IdleExpired
Notify = Callable[[UpstreamEvent], None]


class UpstreamLike(Protocol):
    """The part of an Upstream the router uses; tests stand a fake in for it."""

    @property
    def model(self) -> ModelConfig: ...

    @property
    def state(self) -> UpstreamState: ...

    @property
    def generation(self) -> int:
        """Increments on each successful start (clients key connection pools on it)."""
        ...

    async def start(self) -> None:
        """Start the process and return once it is ready. Raises :class:`StartFailed`."""
        ...

    async def stop(self) -> None:
        """Stop the process group and return when it is gone. Idempotent."""
        ...

    async def evict(self) -> None:
        """Make room for another model: put a ready model with a sleep mode to sleep (falling
        back to a stop when the sleep fails), else stop it."""
        ...

    def set_in_flight(self, count: int) -> None:
        """Told by the router whenever its count of requests in flight changes (TTL pauses)."""
        ...

    def rearm_idle(self) -> None:
        """Told by the router when it declined an ``IdleExpired``: start a new idle period now.

        The timer reports once per idle period; without this, a declined report (the model was
        busy being loaded, or a request queued for it then left) would be the last one."""
        ...
