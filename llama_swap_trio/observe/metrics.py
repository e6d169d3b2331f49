"""``GET /metrics``: Prometheus series (SPEC 6.2), written with ``prometheus_client``.

Counters and histograms are fed by the event bus (:meth:`Metrics.on_event` is a bus listener, so
it sees every event, in order, however slow the feed clients are), so whatever publishes the
events (the router, the request tracker, later a reload or a health watchdog) shows up here
without this module knowing it:

- ``request`` → ``requests_total{model,status}``, ``request_duration_seconds``,
  ``time_to_first_byte_seconds``, ``queue_wait_seconds`` (histograms), ``tokens_total{kind}``,
  ``generation_tokens_per_second`` (the last request's rate);
- ``swap`` (``done``) → ``loads_total{model,outcome}`` (``ok``/``error``),
  ``load_duration_seconds``;
- ``model_state`` with a ``reason`` (the router adds it when it stops a model: ``swap``,
  ``ttl``, ``api``; ``exit`` when a ready model exited by itself; others add ``reload``,
  ``memory``, ``health``) → ``evictions_total{model,reason}``; the next ``starting`` of a
  model whose last stop was not asked for (``exit``, ``health``) or came from a reload counts in
  ``upstream_restarts_total{model,reason}``.

Gauges that are a view of the router's state (``model_state{model,state}``,
``in_flight_requests``, ``queued_requests``) are read from the current router's snapshot at
scrape time, so they can never drift from it.

Labels stay bounded: ``model`` is a configured id (the events carry resolved ids; a request for a
model nobody configured counts under :data:`UNKNOWN_MODEL`), ``status`` an HTTP status, the
other labels fixed words. Each :class:`Metrics` has its own ``CollectorRegistry``: nothing is
registered globally, so daemons (and tests) never share series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llama_swap_trio.feed.bus import Event
from llama_swap_trio.routing.api import RouterSnapshot
from llama_swap_trio.upstream.api import UpstreamState

PREFIX = "llama_swap_trio_"
#: the ``model`` label of requests whose model is unknown (or was never named)
UNKNOWN_MODEL = "(unknown)"
#: the eviction reasons of SPEC 6.2
EVICTION_REASONS = ("swap", "ttl", "api", "reload", "exit", "memory", "health")
#: stops after which the next start of the model counts as a restart
RESTART_REASONS = frozenset({"exit", "health", "reload"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Generation requests last seconds to minutes: the default buckets (up to 10 s) would put most
# of them in +Inf.
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

SnapshotSource = Callable[[], RouterSnapshot | None]


class _RouterView(Collector):
    """The gauges read from the router's snapshot at scrape time."""

    def __init__(self, snapshot: SnapshotSource) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # collected fresh each scrape (names are fixed, values are not)

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            PREFIX + "model_state", "1 for the model's current state", labels=["model", "state"]
        )
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight_requests", "requests being served", labels=["model"]
        )
        queued = GaugeMetricFamily(
            PREFIX + "queued_requests", "requests waiting for their turn", labels=["model"]
        )
        snapshot = self._snapshot()
        if snapshot is not None:
            waiting: dict[str, int] = {}
            for entry in snapshot.queue:
                waiting[entry.model] = waiting.get(entry.model, 0) + 1
            for model in snapshot.models:
                current = str(model.state)
                for name in UpstreamState:
                    state.add_metric([model.id, str(name)], 1.0 if str(name) == current else 0.0)
                in_flight.add_metric([model.id], float(model.in_flight))
                queued.add_metric([model.id], float(waiting.get(model.id, 0)))
        yield state
        yield in_flight
        yield queued


class Metrics:
    """The daemon's metrics: a bus listener plus a view of the current router.

    Args:
        snapshot: returns the current router's snapshot (None while there is none).
    """

    def __init__(self, snapshot: SnapshotSource) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            PREFIX + "requests",
            "model-routed requests by final status",
            ["model", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "request time from arrival to the end of the response",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.ttfb = Histogram(
            PREFIX + "time_to_first_byte_seconds",
            "time from arrival to the first response byte from the upstream",
            ["model"],
            buckets=_TTFB_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            PREFIX + "queue_wait_seconds",
            "time waiting for its turn, the load included",
            ["model"],
            buckets=_QUEUE_BUCKETS,
            registry=registry,
        )
        self.loads = Counter(
            PREFIX + "loads", "model loads by outcome", ["model", "outcome"], registry=registry
        )
        self.load_duration = Histogram(
            PREFIX + "load_duration_seconds",
            "time a load took (evictions and start)",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.evictions = Counter(
            PREFIX + "evictions",
            "models stopped, by reason",
            ["model", "reason"],
            registry=registry,
        )
        self.tokens = Counter(
            PREFIX + "tokens", "tokens by kind", ["model", "kind"], registry=registry
        )
        self.tokens_per_second = Gauge(
            PREFIX + "generation_tokens_per_second",
            "generation speed of the model's last request that reported one",
            ["model"],
            registry=registry,
        )
        self.restarts = Counter(
            PREFIX + "upstream_restarts",
            "starts of a model after a stop nobody asked for (or a reload)",
            ["model", "reason"],
            registry=registry,
        )
        registry.register(_RouterView(snapshot))
        #: labelled children by label values: ``labels()`` costs several microseconds a call
        self._children: dict[tuple[str, ...], Any] = {}
        #: each model's last stop reason, until its next start
        self._last_stop: dict[str, str] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    # -- events ----------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """The bus listener."""
        kind = event.get("type")
        if kind == "request":
            self._request(event)
        elif kind == "swap":
            if event.get("phase") == "done":
                self._swap_done(event)
        elif kind == "model_state":
            self._model_state(event)

    def unresolved(self, status: int) -> None:
        """A model-routed request that never got a model (no key, no or unknown model...)."""
        self._child(self.requests, UNKNOWN_MODEL, str(status)).inc()

    def _request(self, event: Event) -> None:
        model = str(event.get("model") or UNKNOWN_MODEL)
        self._child(self.requests, model, str(event.get("status"))).inc()
        duration = event.get("duration_ms")
        if isinstance(duration, int | float):
            self._child(self.duration, model).observe(duration / 1000)
        ttfb = event.get("ttfb_ms")
        if isinstance(ttfb, int | float):
            self._child(self.ttfb, model).observe(ttfb / 1000)
        queue = event.get("queue_ms")
        if isinstance(queue, int | float):
            self._child(self.queue_wait, model).observe(queue / 1000)
        for kind in ("prompt", "completion"):
            count = event.get(f"{kind}_tokens")
            if isinstance(count, int) and count > 0:
                self._child(self.tokens, model, kind).inc(count)
        rate = event.get("tokens_per_second")
        if isinstance(rate, int | float):
            self._child(self.tokens_per_second, model).set(rate)

    def _swap_done(self, event: Event) -> None:
        model = str(event.get("model"))
        self._child(self.loads, model, "ok" if event.get("ok") else "error").inc()
        duration = event.get("duration_ms")
        if isinstance(duration, int | float):
            self._child(self.load_duration, model).observe(duration / 1000)

    def _model_state(self, event: Event) -> None:
        model = str(event.get("model"))
        reason = event.get("reason")
        if isinstance(reason, str) and reason:
            self._child(self.evictions, model, reason).inc()
            self._last_stop[model] = reason
        if event.get("state") == UpstreamState.STARTING:
            last = self._last_stop.pop(model, None)
            if last in RESTART_REASONS:
                self._child(self.restarts, model, last).inc()
