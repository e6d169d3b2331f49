"""Observability (SPEC 6.2): the request lifecycle on the feed, the access log, Prometheus metrics
and the request history.

:class:`Observability` is one per daemon (it outlives reloads, like the event bus): the request
tracker publishes ``request_start`` / ``request_progress`` / ``request``; metrics and the activity
ring are bus listeners, so they count whatever the daemon publishes.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.observe.activity import Activity, Store
from llama_swap_trio.observe.metrics import Metrics
from llama_swap_trio.observe.requests import RequestTracker
from llama_swap_trio.routing.api import RouterSnapshot

__all__ = ["Observability"]


class Observability:
    """The daemon's tracker, metrics and activity history, wired to ``bus``.

    Args:
        bus: the daemon's event bus.
        snapshot: the current router's snapshot, for the gauges (None while there is none).
        max_entries: size of the activity ring (``activity.max_entries``).
        store: the opened ``activity.db``, or None.
    """

    def __init__(
        self,
        bus: EventBus,
        snapshot: Callable[[], RouterSnapshot | None] = lambda: None,
        *,
        max_entries: int = 10_000,
        store: Store | None = None,
    ) -> None:
        self.tracker = RequestTracker(bus)
        self.metrics = Metrics(snapshot)
        self.activity = Activity(max_entries, store)
        bus.add_listener(self.metrics.on_event)
        bus.add_listener(self.activity.on_event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background tasks: ``request_progress`` ticks and the activity writer."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.tracker.run)
            nursery.start_soon(self.activity.run)
            task_status.started()
