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

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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

# a tuple, not ``int | float``: that union is built anew on every call
_NUMBER = (int, float)
_REQUEST_TIMES = (
    ("duration_ms", "request_duration_seconds"),
    ("ttfb_ms", "time_to_first_byte_seconds"),
    ("queue_ms", "queue_wait_seconds"),
)
_TOKEN_KINDS = (("prompt_tokens", "prompt"), ("completion_tokens", "completion"))

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


class _Histogram:
    """One histogram's state: counts per bucket (not cumulative), sum and count."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0


class Metrics:
    """The daemon's metrics: a bus listener plus a view of the current router.

    Why not ``prometheus_client``'s ``Counter`` and ``Histogram`` objects: each ``inc`` or
    ``observe`` takes a lock and costs 1.5-3 us unloaded (4.5 and 9.3 us measured on the shared
    2-core VM), and a request updates about eight series, which alone was +13 % of the CPU per
    proxied request (benchmarks/RESULTS.md, issue 16). Here a request costs a few dict updates and
    a ``bisect``; ``prometheus_client`` still writes the exposition, from metric families built
    at scrape time (:meth:`collect`), in this instance's own ``CollectorRegistry``.

    Args:
        snapshot: returns the current router's snapshot (None while there is none).
    """

    def __init__(self, snapshot: SnapshotSource) -> None:
        self.registry = CollectorRegistry()
        #: counters: name -> label values -> value
        self._counters: dict[str, dict[tuple[str, ...], float]] = {
            name: {} for name, _, _ in _COUNTERS
        }
        #: histograms: name -> model -> state
        self._histograms: dict[str, dict[str, _Histogram]] = {
            name: {} for name, _, _ in _HISTOGRAMS
        }
        self._tokens_per_second: dict[str, float] = {}
        #: each model's last stop reason, until its next start
        self._last_stop: dict[str, str] = {}
        self.registry.register(_Families(self))
        self.registry.register(_RouterView(snapshot))

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    # -- recording ------------------------------------------------------------------------------

    def _count(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        series = self._counters[name]
        series[labels] = series.get(labels, 0.0) + amount

    def _observe(self, name: str, model: str, value: float) -> None:
        per_model = self._histograms[name]
        histogram = per_model.get(model)
        if histogram is None:
            histogram = per_model[model] = _Histogram(len(_BUCKETS[name]))
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal")
        histogram.counts[bisect_left(_BUCKETS[name], value)] += 1
        histogram.sum += value
        histogram.count += 1

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
        self._count("requests", (UNKNOWN_MODEL, str(status)))

    def _request(self, event: Event) -> None:
        # The hot one (once per request): written out, no helper calls.
        get = event.get
        model = str(get("model") or UNKNOWN_MODEL)
        requests = self._counters["requests"]
        key = (model, str(get("status")))
        requests[key] = requests.get(key, 0.0) + 1.0
        histograms = self._histograms
        for field, name in _REQUEST_TIMES:
            value = get(field)
            if value.__class__ is float or isinstance(value, _NUMBER):
                seconds = value / 1000
                per_model = histograms[name]
                histogram = per_model.get(model)
                if histogram is None:
                    histogram = per_model[model] = _Histogram(len(_BUCKETS[name]))
                histogram.counts[bisect_left(_BUCKETS[name], seconds)] += 1
                histogram.sum += seconds
                histogram.count += 1
        tokens = self._counters["tokens"]
        for field, kind in _TOKEN_KINDS:
            count = get(field)
            if count.__class__ is int and count > 0:
                tokens[(model, kind)] = tokens.get((model, kind), 0.0) + count
        rate = get("tokens_per_second")
        if rate is not None and isinstance(rate, _NUMBER):
            self._tokens_per_second[model] = float(rate)

    def _swap_done(self, event: Event) -> None:
        model = str(event.get("model"))
        self._count("loads", (model, "ok" if event.get("ok") else "error"))
        duration = event.get("duration_ms")
        if isinstance(duration, _NUMBER):
            self._observe("load_duration_seconds", model, duration / 1000)

    def _model_state(self, event: Event) -> None:
        model = str(event.get("model"))
        reason = event.get("reason")
        if isinstance(reason, str) and reason:
            self._count("evictions", (model, reason))
            self._last_stop[model] = reason
        if event.get("state") == UpstreamState.STARTING:
            last = self._last_stop.pop(model, None)
            if last in RESTART_REASONS:
                self._count("upstream_restarts", (model, last))


#: counters: name (``_total`` is added), help, label names
_COUNTERS = (
    ("requests", "model-routed requests by final status", ("model", "status")),
    ("loads", "model loads by outcome", ("model", "outcome")),
    ("evictions", "models stopped, by reason", ("model", "reason")),
    ("tokens", "tokens by kind", ("model", "kind")),
    (
        "upstream_restarts",
        "starts of a model after a stop nobody asked for (or a reload)",
        ("model", "reason"),
    ),
)
#: histograms: name, help, buckets (all labelled by model)
_HISTOGRAMS = (
    (
        "request_duration_seconds",
        "request time from arrival to the end of the response",
        _DURATION_BUCKETS,
    ),
    (
        "time_to_first_byte_seconds",
        "time from arrival to the first response byte from the upstream",
        _TTFB_BUCKETS,
    ),
    ("queue_wait_seconds", "time waiting for its turn, the load included", _QUEUE_BUCKETS),
    ("load_duration_seconds", "time a load took (evictions and start)", _LOAD_BUCKETS),
)
_BUCKETS: dict[str, tuple[float, ...]] = {
    name: tuple(float(b) for b in buckets) for name, _, buckets in _HISTOGRAMS
}


class _Families(Collector):
    """The counters, histograms and the rate gauge, as metric families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        for name, text, labels in _COUNTERS:
            family = CounterMetricFamily(PREFIX + name, text, labels=list(labels))
            for values, value in sorted(metrics._counters[name].items()):
                family.add_metric(list(values), value)
            yield family
        for name, text, buckets in _HISTOGRAMS:
            histogram = HistogramMetricFamily(PREFIX + name, text, labels=["model"])
            for model, state in sorted(metrics._histograms[name].items()):
                cumulative, running = [], 0
                for bound, count in zip((*buckets, math.inf), state.counts, strict=True):
                    running += count
                    cumulative.append(("+Inf" if bound == math.inf else repr(bound), running))
                histogram.add_metric([model], cumulative, sum_value=state.sum)
            yield histogram
        rate = GaugeMetricFamily(
            PREFIX + "generation_tokens_per_second",
            "generation speed of the model's last request that reported one",
            labels=["model"],
        )
        for model, value in sorted(metrics._tokens_per_second.items()):
            rate.add_metric([model], value)
        yield rate
