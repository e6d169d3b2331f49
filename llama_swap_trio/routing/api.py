"""The router as the HTTP layer sees it.

Handlers never touch scheduling state: they ask the router for a :class:`Grant` and hold it while
they forward, through the ``serve`` async context manager::

    async with router.serve("qwen", on_progress=progress) as grant:
        ...  # forward to grant.model.proxy; grant.upstream.generation keys the connection pool

``serve`` raises :class:`~llama_swap_trio.errors.ProxyError` (429, 502, 503, 504...) when the
request cannot be served; leaving the block (normally, by error or by cancellation) reports the
request as done, so in-flight counts can never leak. Cancelling a handler while it waits removes
it from the queue, and a request nobody waits for never causes a load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Literal, Protocol

import attrs
import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.routing.plan import Plan, WaitingRequest
from llama_swap_trio.upstream.api import UpstreamLike, UpstreamState


@attrs.frozen
class Grant:
    model: ModelConfig
    upstream: UpstreamLike


@attrs.frozen
class Progress:
    """What a waiting request is waiting for; sent to ``on_progress`` while it waits.

    kinds:
        ``queued``: waiting for its turn at ``position`` (1 = next).
        ``loading``: its model is being loaded; ``evict`` lists the models stopped to make room.
        ``ready``: granted; ``load_seconds`` is how long the load it waited for took (0 when none).
    """

    kind: Literal["queued", "loading", "ready"]
    position: int = 0
    evict: tuple[str, ...] = ()
    load_seconds: float = 0.0


ProgressCallback = Callable[[Progress], None]
#: ``serve(..., cancel_wait=...)``: makes the cancel scope a waiting request waits in
CancelWait = Callable[[], AbstractContextManager[trio.CancelScope]]


class WaitCancelled(Exception):
    """``serve``'s wait was cut short by its ``cancel_wait`` scope (the client left): the
    request left the queue, was never granted and caused no load."""


@attrs.frozen
class ModelStatus:
    id: str
    state: UpstreamState
    in_flight: int


@attrs.frozen
class QueueEntry:
    model: str
    position: int
    #: what it waits for (``turn``, ``in_flight``, ``loading``, ``min_residency``,
    #: ``starvation_guard``, ``memory``): an explanation, not part of its identity
    reason: str = attrs.field(default="turn", eq=False)


@attrs.frozen
class RouterSnapshot:
    #: every configured model, sorted by id
    models: tuple[ModelStatus, ...]
    #: requests waiting for their turn (not those that joined a load under way)
    queue: tuple[QueueEntry, ...]
    #: bytes measured for ``memory = "measured"`` models that have a figure (SPEC 6.7)
    measured: Mapping[str, int] = attrs.field(factory=dict)


class RouterLike(Protocol):
    def serve(
        self,
        model_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        require_ready: bool = False,
        cancel_wait: CancelWait | None = None,
    ) -> AbstractAsyncContextManager[Grant]:
        """Wait until ``model_id`` (a real id, aliases already resolved) may be served.

        Args:
            model_id: the model to serve.
            on_progress: called (synchronously, from the router task; must not block) with each
                change of what the request waits for.
            require_ready: serve only if the model is ready now and nothing must be evicted;
                otherwise raise 409 ``model_not_loaded`` (``/upstream`` ignored paths).
            cancel_wait: a request that must wait (queued, or for a load) waits inside
                ``cancel_wait()``; when that scope is cancelled (the client left) the request is
                withdrawn and ``serve`` raises :class:`WaitCancelled`. A request granted at once
                never enters it (the common case costs no cancel scope).

        Raises:
            ProxyError: 404 unknown model, 429 concurrency limit, 502 failed start, 503 shutting
                down or unloaded while waiting, 504 health check timeout.
        """
        ...

    def serve_detached(
        self, model_id: str, *, require_ready: bool = False
    ) -> AbstractAsyncContextManager[Grant]:
        """Like ``serve``, for a request that does not hold its model (a websocket with
        ``websockets_hold_model = false``): it is not counted in flight, so it blocks no swap
        and no TTL, and the block is cancelled as soon as the model stops."""
        ...

    def plan(self, model_id: str, *, force: bool = False) -> Plan:
        """What a request for ``model_id`` would get now, and why (``GET /api/plan``); computed
        by the scheduler's own decision functions, without side effects."""
        ...

    def waiting_requests(self) -> tuple[WaitingRequest, ...]:
        """Every waiting request and what it waits for (``GET /api/queue``)."""
        ...

    async def load(self, model_id: str, *, force: bool = False) -> None:
        """Load ``model_id`` as a request would (swapping as needed); return when ready.

        Raises 409 ``model_protected`` when that would evict a protected model, unless
        ``force`` (``POST /api/models/load/{m}?force=true``)."""
        ...

    async def unload(self, model_id: str | None = None) -> list[str]:
        """Stop one model (or every running one when None); return the ids that were stopped."""
        ...

    def snapshot(self) -> RouterSnapshot: ...

    def upstream(self, model_id: str) -> UpstreamLike: ...
