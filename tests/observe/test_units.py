"""Observability pieces on their own: config, access log lines, the ring and store, metrics,
bus listeners and the relay's progress counters."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from llama_swap_trio.config import ConfigError, load_config_text
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import Redactor
from llama_swap_trio.http.usage import UsageSniffer
from llama_swap_trio.observe.access import Exchange, access_line, redacted_query
from llama_swap_trio.observe.activity import Activity, ActivityStoreError, open_store
from llama_swap_trio.observe.metrics import Metrics
from llama_swap_trio.routing.api import ModelStatus, QueueEntry, RouterSnapshot
from llama_swap_trio.upstream.api import UpstreamState

M = '[models.m]\ncmd = "srv --port ${PORT}"\n'


# -- config ----------------------------------------------------------------------------------------


def test_activity_table_defaults_and_relative_db(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.toml"
    config = load_config_text(M, path=str(path), environ={})
    assert (config.activity.max_entries, config.activity.db) == (10_000, None)
    config = load_config_text(
        M + '[activity]\nmax_entries = 5\ndb = "hist.db"\n', path=str(path), environ={}
    )
    assert config.activity.max_entries == 5
    assert config.activity.db == str(tmp_path / "conf" / "hist.db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[activity]\nmax_entries = 0", "activity.max_entries: must be >= 1, got 0"),
        ('[activity]\nmax_entries = "9"', "activity.max_entries: expected int, got str '9'"),
        ("[activity]\ndb = 1", "activity.db: expected str, got int 1"),
        ('[activity]\ndb = ""', "activity.db: must not be empty"),
        ("[activity]\nmax_entry = 3", "activity.max_entry: unknown key"),
    ],
)
def test_activity_table_is_validated(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(M + text, environ={})
    assert any(
        problem.startswith("config.toml: " + expected) for problem in caught.value.problems
    ), caught.value.problems


# -- access log --------------------------------------------------------------------------------


def test_api_keys_in_a_query_are_redacted_however_encoded() -> None:
    assert redacted_query(b"a=1&api_key=s3cret&b=2") == "a=1&api_key=[redacted]&b=2"
    assert redacted_query(b"api%5Fkey=s3cret") == "api%5Fkey=[redacted]"
    assert redacted_query(b"model=x") == "model=x"


def test_access_line_of_a_model_request_has_its_figures() -> None:
    exchange = Exchange(0.0)
    exchange.status = 200
    exchange.life = SimpleNamespace(
        event={  # type: ignore[assignment]
            "id": "ab-1",
            "model": "m",
            "status": 200,
            "duration_ms": 1380.44,
            "ttfb_ms": 1371.2,
            "queue_ms": 1368.0,
            "load_ms": 1300.0,
            "prompt_tokens": 12,
            "completion_tokens": 40,
        }
    )
    scope = {"method": "POST", "path": "/v1/chat/completions", "query_string": b""}
    line = access_line(scope, exchange, 2.0, Redactor(()))
    assert line == (
        "POST /v1/chat/completions model=m status=200 duration_ms=1380.4 ttfb_ms=1371.2 "
        "queue_ms=1368.0 load_ms=1300.0 prompt_tokens=12 completion_tokens=40 id=ab-1"
    )


def test_access_line_never_shows_a_configured_key() -> None:
    exchange = Exchange(0.0)
    exchange.status = 401
    scope = {"method": "GET", "path": "/logs/sekrit", "query_string": b"api_key=sekrit"}
    line = access_line(scope, exchange, 0.5, Redactor(("sekrit",)))
    assert "sekrit" not in line
    assert "status=401" in line
    assert "duration_ms=500.0" in line


# -- activity ------------------------------------------------------------------------------------


def _request(n: int, model: str = "m") -> dict[str, Any]:
    return {"type": "request", "id": f"r-{n}", "model": model, "status": 200, "at": float(n)}


def test_the_ring_is_bounded_newest_first_and_filtered() -> None:
    activity = Activity(3)
    for n in range(5):
        activity.on_event(_request(n, "a" if n % 2 else "b"))
    activity.on_event({"type": "swap", "phase": "done"})  # not a request: ignored
    assert [r["id"] for r in activity.recent()] == ["r-4", "r-3", "r-2"]
    assert [r["id"] for r in activity.recent(limit=1)] == ["r-4"]
    assert [r["id"] for r in activity.recent(model="a")] == ["r-3"]
    assert "type" not in activity.recent()[0]


async def test_the_store_writes_batches_and_fills_the_next_ring(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    activity = Activity(10, open_store(path, keep=4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(activity.run)
        for n in range(6):
            activity.on_event(_request(n))
        with trio.fail_after(10):
            while sqlite3.connect(path).execute("SELECT COUNT(*) FROM requests").fetchone() != (4,):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
    again = Activity(10, open_store(path, keep=4))
    assert [r["id"] for r in again.recent()] == ["r-5", "r-4", "r-3", "r-2"]


def test_an_unusable_store_names_its_path(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite" * 1000)
    with pytest.raises(ActivityStoreError, match=str(garbage)):
        open_store(str(garbage), keep=10)
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(ActivityStoreError, match=str(missing)):
        open_store(str(missing), keep=10)


# -- metrics and the bus -------------------------------------------------------------------------


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_what_the_bus_carries_and_read_the_router_at_scrape() -> None:
    snapshot = RouterSnapshot(
        models=(ModelStatus("m", UpstreamState.READY, 2),),
        queue=(QueueEntry("m", 1), QueueEntry("m", 2)),
    )
    metrics = Metrics(lambda: snapshot)
    bus = EventBus()
    bus.add_listener(metrics.on_event)
    bus.publish(
        {
            **_request(1),
            "duration_ms": 1500.0,
            "ttfb_ms": 200.0,
            "queue_ms": 100.0,
            "prompt_tokens": 3,
            "completion_tokens": 7,
            "tokens_per_second": 21.5,
        }
    )
    bus.publish({"type": "swap", "phase": "done", "model": "m", "ok": False, "duration_ms": 50})
    bus.publish({"type": "model_state", "model": "m", "state": "stopping", "reason": "health"})
    bus.publish({"type": "model_state", "model": "m", "state": "starting"})
    metrics.unresolved(404)
    s = _samples(metrics)
    p = "llama_swap_trio_"
    assert s[(p + "requests_total", (("model", "m"), ("status", "200")))] == 1
    assert s[(p + "requests_total", (("model", "(unknown)"), ("status", "404")))] == 1
    assert s[(p + "request_duration_seconds_sum", (("model", "m"),))] == 1.5
    assert s[(p + "time_to_first_byte_seconds_count", (("model", "m"),))] == 1
    assert s[(p + "queue_wait_seconds_sum", (("model", "m"),))] == 0.1
    assert s[(p + "tokens_total", (("kind", "completion"), ("model", "m")))] == 7
    assert s[(p + "generation_tokens_per_second", (("model", "m"),))] == 21.5
    assert s[(p + "loads_total", (("model", "m"), ("outcome", "error")))] == 1
    assert s[(p + "evictions_total", (("model", "m"), ("reason", "health")))] == 1
    assert s[(p + "upstream_restarts_total", (("model", "m"), ("reason", "health")))] == 1
    assert s[(p + "model_state", (("model", "m"), ("state", "ready")))] == 1
    assert s[(p + "model_state", (("model", "m"), ("state", "stopped")))] == 0
    assert s[(p + "in_flight_requests", (("model", "m"),))] == 2
    assert s[(p + "queued_requests", (("model", "m"),))] == 2


def test_two_metrics_share_nothing() -> None:
    first, second = Metrics(lambda: None), Metrics(lambda: None)
    first.unresolved(401)
    assert "401" in first.render().decode()
    assert "401" not in second.render().decode()


def test_a_failing_listener_does_not_stop_the_others_or_subscribers() -> None:
    bus = EventBus()
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    bus.add_listener(broken)
    bus.add_listener(seen.append)
    with bus.subscribe() as subscription:
        bus.publish({"type": "request"})
        bus.publish({"type": "log", "line": "x"})  # log events never reach listeners
        assert subscription.get_nowait() == {"type": "request"}
    assert seen == [{"type": "request"}]


def test_the_sniffer_counts_events_and_bytes_across_chunks() -> None:
    sniffer = UsageSniffer("text/event-stream")
    for chunk in (b"data: {}\n\n", b"data: {}\n", b"\ndata: {}\n\nda", b"ta: [DONE]\n\n"):
        sniffer.feed(chunk)
    assert sniffer.sse
    assert sniffer.events == 4
    assert sniffer.bytes == 10 + 9 + 13 + 12


def test_the_sniffer_counts_events_in_big_chunks_too() -> None:
    event = b"data: " + b"x" * 5000 + b"\n\n"
    stream = event * 6
    sniffer = UsageSniffer("text/event-stream")
    for start in range(0, len(stream), 4099):  # pieces that split the blank lines anywhere
        sniffer.feed(stream[start : start + 4099])
    assert sniffer.events == 6
    assert sniffer.bytes == len(stream)
