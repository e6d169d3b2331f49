"""Every model-routed request's life on the feed (SPEC 6.2): ``request_start``, ``request_progress``
and the final ``request`` event.

One :class:`RequestTracker` lives as long as the daemon (ids are unique per daemon run, and a
request started on a generation that a reload retires still ends on the same tracker). The app
calls :meth:`RequestTracker.start` once a request is resolved to a model, which publishes
``request_start``, and :meth:`RequestTracker.finish` exactly once however the request ends
(answered, refused with a proxy error, client gone, upstream broken off), which publishes
``request``. Everything else that wants to know about requests (metrics, the activity ring, the
web UI) reads those two events from the bus.

Times, as the SPEC words them:

- ``ttfb_ms`` and ``duration_ms`` count from the request's *arrival* (the app's first look at
  it), so a request that waited 10 s for its turn shows a duration above 10 s;
- ``queue_ms``: from ``request_start`` to the grant (or to the refusal): waiting for its turn, the
  load included; ``load_ms``: the load it waited for (0 if none);
- ``upstream_ttfb_ms``: from the start of forwarding to the first body byte relayed.

``request_progress`` costs nothing per chunk beyond two counters in the relay's accounting
(:class:`~llama_swap_trio.http.usage.UsageSniffer` ``events`` and ``bytes``): one task
(:meth:`RequestTracker.run`) reads them once a second for each open streamed response.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import trio

from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.http.usage import UsageSniffer
from llama_swap_trio.routing.api import Progress

#: seconds between two ``request_progress`` events of one stream
PROGRESS_INTERVAL = 1.0


class RequestLife:
    """One model-routed request from its resolution to its end (the app owns it).

    The forwarder sets ``sniffer`` once a response body is relayed (its counters feed
    ``request_progress``); the router's progress callback (:meth:`on_progress`) records the
    grant and the load.
    """

    __slots__ = (
        "arrived",
        "at",
        "event",
        "granted",
        "id",
        "load_ms",
        "loading_since",
        "method",
        "model",
        "path",
        "sniffer",
        "started",
    )

    def __init__(self, rid: str, model: str, path: str, method: str, arrived: float) -> None:
        self.id = rid
        self.model = model
        self.path = path
        self.method = method
        #: trio time of arrival, of ``request_start``, of the grant (None until granted)
        self.arrived = arrived
        self.started = trio.current_time()
        self.granted: float | None = None
        #: unix time of ``request_start``
        self.at = time.time()
        self.loading_since: float | None = None
        self.load_ms = 0.0
        self.sniffer: UsageSniffer | None = None
        #: the ``request`` event, once finished
        self.event: dict[str, Any] | None = None

    def on_progress(self, progress: Progress) -> None:
        """The router's progress callback (synchronous, from the router; never blocks)."""
        if progress.kind == "ready":
            self.granted = trio.current_time()
            self.load_ms = progress.load_seconds * 1000
        elif progress.kind == "loading" and self.loading_since is None:
            self.loading_since = trio.current_time()

    def start_record(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "path": self.path, "at": self.at}


class RequestTracker:
    """Ids, the open requests (for the feed's snapshot) and the three request events."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        # A per-run prefix: ids stay unique in a history that outlives the run (activity.db).
        self._prefix = secrets.token_hex(3) + "-"
        self._numbers = itertools.count(1)
        self._open: dict[str, RequestLife] = {}

    def start(self, model: str, path: str, method: str, arrived: float) -> RequestLife:
        """A request was resolved to ``model``: publish ``request_start`` and track it."""
        rid = self._prefix + str(next(self._numbers))
        life = RequestLife(rid, model, path, method, arrived)
        self._open[rid] = life
        self._bus.publish(
            {"type": "request_start", "id": rid, "model": model, "path": path, "at": life.at}
        )
        return life

    def finish(
        self,
        life: RequestLife,
        status: int,
        *,
        first_byte_at: float | None = None,
        upstream_ttfb_ms: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        tokens_per_second: float | None = None,
        error: str | None = None,
        client_disconnected: bool = False,
    ) -> dict[str, Any]:
        """Publish the ``request`` event of ``life`` (once; later calls return the first one).

        ``client_disconnected``: the client left before the response was complete (the event
        then says ``"client_disconnected": true``; ``status`` is what was sent, or 499 when no
        head was)."""
        if life.event is not None:
            return life.event
        self._open.pop(life.id, None)
        now = trio.current_time()
        granted = life.granted if life.granted is not None else now
        load_ms = life.load_ms
        if life.granted is None and life.loading_since is not None:
            load_ms = (now - life.loading_since) * 1000  # the load it waited for, up to its end
        arrived = life.arrived
        event: dict[str, Any] = {
            "type": "request",
            "id": life.id,
            "model": life.model,
            "path": life.path,
            "status": status,
            "duration_ms": round((now - arrived) * 1000, 3),
            "ttfb_ms": None
            if first_byte_at is None
            else round((first_byte_at - arrived) * 1000, 3),
            "queue_ms": round(max(0.0, granted - life.started) * 1000, 3),
            "load_ms": round(load_ms, 3),
            "upstream_ttfb_ms": None if upstream_ttfb_ms is None else round(upstream_ttfb_ms, 3),
            "at": life.at,
        }
        if prompt_tokens is not None:
            event["prompt_tokens"] = prompt_tokens
        if completion_tokens is not None:
            event["completion_tokens"] = completion_tokens
        if tokens_per_second is not None:
            event["tokens_per_second"] = tokens_per_second
        if error is not None:
            event["error"] = error
        if client_disconnected:
            event["client_disconnected"] = True
        life.event = event
        self._bus.publish(event)
        return event

    def open_requests(self) -> list[dict[str, Any]]:
        """The started, unfinished requests, oldest first (the snapshot's ``requests``)."""
        return [life.start_record() for life in self._open.values()]

    def progress_events(self) -> list[dict[str, Any]]:
        """A ``request_progress`` event for each open streamed response."""
        events = []
        for life in self._open.values():
            sniffer = life.sniffer
            if sniffer is not None and sniffer.sse:
                events.append(
                    {
                        "type": "request_progress",
                        "id": life.id,
                        "chunks": sniffer.events,
                        "bytes": sniffer.bytes,
                    }
                )
        return events

    async def run(self) -> None:
        """Publish ``request_progress`` about once a second per open stream, until cancelled."""
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            for event in self.progress_events():
                self._bus.publish(event)
