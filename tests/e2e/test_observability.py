"""Observability end to end (SPEC 6.2): every request's life on the feed, the access log,
``/metrics`` and ``/api/activity``, against the real daemon and real fake upstreams.

Nothing sleeps to wait for a state: each test reads the feed (or polls an endpoint) until what
it waits for shows up, inside ``fail_after``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import aclosing
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StartDaemon
from tests.e2e.test_feed import WAIT, chat, is_type, models_config, websocket_feed
from tests.fakes import fake_cmd, free_port


def _slow_stream(model: str, tokens: int = 30, interval: float = 0.1) -> dict[str, object]:
    return chat(model, stream=True, x_tokens=tokens, x_token_interval=interval)


async def test_a_streamed_request_that_waits_for_its_load_shows_start_progress_and_end(
    start_daemon: StartDaemon,
) -> None:
    config = models_config("a", knobs={"a": ("--healthy-after", "0.6")})
    daemon = await start_daemon(config)
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        snapshot = await feed.until(is_type("snapshot"))
        assert snapshot["requests"] == []
        # a stream of ~3 s for a model that is not loaded yet (its start takes >= 0.6 s)
        response = await client.post("/v1/chat/completions", json=_slow_stream("a"))
        assert response.status_code == 200
        end = await feed.until(is_type("request", model="a"))

    start = feed.of_type("request_start")[0]
    assert set(start) == {"type", "id", "model", "path", "at"}
    assert (start["model"], start["path"]) == ("a", "/v1/chat/completions")
    assert end["id"] == start["id"]
    progress = [m for m in feed.of_type("request_progress") if m["id"] == start["id"]]
    assert progress, "no request_progress during a 3 s stream"
    chunks = [m["chunks"] for m in progress]
    assert chunks == sorted(chunks)
    assert chunks[-1] > 0
    assert all(m["bytes"] > 0 for m in progress if m["chunks"])
    # it waited for the load: queue and load times, and ttfb/duration count from arrival
    assert end["status"] == 200
    assert "error" not in end
    assert end["load_ms"] >= 500
    assert end["queue_ms"] >= end["load_ms"] - 1
    assert end["ttfb_ms"] >= end["queue_ms"]
    assert end["ttfb_ms"] >= end["upstream_ttfb_ms"]
    assert end["duration_ms"] >= end["queue_ms"] + 2000
    assert end["completion_tokens"] == 30


async def test_a_429_a_failed_start_and_a_client_that_leaves_all_end_on_the_feed(
    start_daemon: StartDaemon,
) -> None:
    port = free_port()
    config = (
        f"health_check_timeout = 30\nstart_port = {port}\n"
        f"[models.a]\ncmd = {json.dumps(fake_cmd('--model-id', 'a'))}\nconcurrency_limit = 1\n"
        f"[models.broken]\ncmd = {json.dumps(fake_cmd('--exit-at-startup', '3'))}\n"
    )
    daemon = await start_daemon(config)
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        await feed.until(is_type("snapshot"))
        # a stream holds a's only slot; the client leaves it after its first token
        async with client.stream("POST", "/v1/chat/completions", json=_slow_stream("a")) as held:
            async with aclosing(held.aiter_lines()) as lines:
                async for line in lines:
                    if line.startswith("data: {"):
                        break
                # a second request for a is refused with 429
                refused = await client.post("/v1/chat/completions", json=chat("a"))
                assert refused.status_code == 429
                limited = await feed.until(is_type("request", status=429))
        left = await feed.until(is_type("request", model="a"))
        failed = await client.post("/v1/chat/completions", json=chat("broken"))
        assert failed.status_code == 502
        broken = await feed.until(is_type("request", model="broken"))

    starts = {m["id"]: m for m in feed.of_type("request_start")}
    assert {limited["id"], left["id"], broken["id"]} <= set(starts)
    assert limited["error"] == "concurrency_limit"
    # gone mid-stream: the head was sent, the client left; not an error the proxy answered
    assert left["status"] == 200
    assert left["client_disconnected"] is True
    assert "error" not in left
    assert left["upstream_ttfb_ms"] is not None
    assert (broken["status"], broken["error"]) == (502, "upstream_error")
    assert broken["load_ms"] > 0
    assert broken["queue_ms"] >= broken["load_ms"] - 1
    snapshot_later = None
    async with websocket_feed(daemon) as again:
        snapshot_later = await again.until(is_type("snapshot"))
    assert snapshot_later["requests"] == []


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    samples: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        samples[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return samples


def _value(
    families: dict[str, list[tuple[str, dict[str, str], float]]], sample: str, **labels: str
) -> float:
    family = sample
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        family = family.removesuffix(suffix)
    for name, found, value in families.get(family, []):
        if name == sample and all(found.get(k) == v for k, v in labels.items()):
            return value
    raise AssertionError(f"no sample {sample}{labels}")


async def test_metrics_after_a_mix_of_requests(start_daemon: StartDaemon) -> None:
    port = free_port()
    config = (
        f'health_check_timeout = 30\nstart_port = {port}\napi_keys = ["sekrit"]\n'
        f"[models.a]\ncmd = {json.dumps(fake_cmd('--model-id', 'a'))}\nconcurrency_limit = 1\n"
        f"[models.b]\ncmd = {json.dumps(fake_cmd('--model-id', 'b'))}\n"
        f"[models.broken]\ncmd = {json.dumps(fake_cmd('--exit-at-startup', '3'))}\n"
    )
    daemon = await start_daemon(config)
    auth = {"authorization": "Bearer sekrit"}
    async with daemon.client(headers=auth) as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        async with client.stream("POST", "/v1/chat/completions", json=_slow_stream("a", 5)) as s:
            chunks = s.aiter_bytes()
            await chunks.__anext__()
            # the stream holds a's only slot
            assert (await client.post("/v1/completions", json=chat("a"))).status_code == 429
            async for _ in chunks:
                pass
        assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("broken"))).status_code == 502
        assert (await client.post("/v1/chat/completions", json=chat("nope"))).status_code == 404
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        async with httpx.AsyncClient(base_url=daemon.url, trust_env=False) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        with trio.fail_after(WAIT):
            while True:
                response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                families = _families(response.text)
                if _value(families, "llama_swap_trio_requests_total", model="a", status="200") >= 3:
                    break
                await trio.sleep(0.05)

    f, p = families, "llama_swap_trio_"
    # requests_total: a 200 x3 (one was the stream), a 429, b 200, broken 502, unknown 404
    assert _value(f, p + "requests_total", model="a", status="429") == 1
    assert _value(f, p + "requests_total", model="b", status="200") == 1
    assert _value(f, p + "requests_total", model="broken", status="502") == 1
    assert _value(f, p + "requests_total", model="(unknown)", status="404") == 1
    assert not any(s[1].get("model") == "nope" for v in f.values() for s in v)
    # only the unknown model's request is counted under (unknown)
    unknown = [s for s in f["llama_swap_trio_requests"] if s[1]["model"] == "(unknown)"]
    assert [(s[1]["status"], s[2]) for s in unknown if s[0].endswith("_total")] == [("404", 1)]
    # histograms: one observation per finished request
    assert _value(f, p + "request_duration_seconds_count", model="a") == 4
    assert _value(f, p + "queue_wait_seconds_count", model="a") == 4
    assert _value(f, p + "time_to_first_byte_seconds_count", model="a") == 3  # not the 429
    assert _value(f, p + "request_duration_seconds_bucket", model="b", le="+Inf") == 1
    # loads: a, then b (evicting a), then broken (evicting b) failed, then a again
    assert _value(f, p + "loads_total", model="a", outcome="ok") == 2
    assert _value(f, p + "loads_total", model="broken", outcome="error") == 1
    assert _value(f, p + "load_duration_seconds_count", model="a") == 2
    assert _value(f, p + "evictions_total", model="a", reason="swap") == 1
    assert _value(f, p + "evictions_total", model="b", reason="swap") == 1
    # the router's view at scrape time
    assert _value(f, p + "model_state", model="a", state="ready") == 1
    assert _value(f, p + "model_state", model="a", state="stopped") == 0
    assert _value(f, p + "model_state", model="b", state="stopped") == 1
    assert _value(f, p + "in_flight_requests", model="a") == 0
    assert _value(f, p + "queued_requests", model="b") == 0
    assert _value(f, p + "tokens_total", model="a", kind="completion") > 0
    assert _value(f, p + "tokens_total", model="b", kind="prompt") > 0
    assert _value(f, p + "generation_tokens_per_second", model="a") > 0
    assert p + "upstream_restarts" in f


async def test_a_model_that_exits_counts_an_eviction_and_a_restart(
    start_daemon: StartDaemon,
) -> None:
    config = models_config("a", knobs={"a": ("--exit-after", "0.5", "--exit-code", "1")})
    daemon = await start_daemon(config)
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        await feed.until(is_type("snapshot"))
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        stopping = await feed.until(is_type("model_state", model="a", state="stopping"))
        await feed.until(is_type("model_state", model="a", state="stopped"))
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        metrics = _families((await client.get("/metrics")).text)
    assert stopping["reason"] == "exit"
    p = "llama_swap_trio_"
    assert _value(metrics, p + "evictions_total", model="a", reason="exit") == 1
    assert _value(metrics, p + "upstream_restarts_total", model="a", reason="exit") == 1


async def test_activity_is_listed_newest_first_and_survives_a_restart(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    db = tmp_path / "history.db"
    config = models_config("a", "b", extra=f"[activity]\ndb = {json.dumps(str(db))}\n")
    daemon = await start_daemon(config)
    async with daemon.client() as client:
        for model in ("a", "a", "b"):
            assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200
        listed = (await client.get("/api/activity")).json()["requests"]
        assert [r["model"] for r in listed] == ["b", "a", "a"]
        only_a = (await client.get("/api/activity", params={"model": "a", "limit": 1})).json()
        assert [r["id"] for r in only_a["requests"]] == [listed[1]["id"]]
        assert (await client.get("/api/activity", params={"limit": "x"})).status_code == 400
    ids = [r["id"] for r in listed]
    # the daemon stops (SIGTERM): the last batch is written on the way out
    daemon.signal(15)
    assert await daemon.wait_exit() == 0
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM requests").fetchone()
    assert rows == (3,)

    again = await start_daemon(config)
    async with again.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 200
        with trio.fail_after(WAIT):
            while len(history := (await client.get("/api/activity")).json()["requests"]) < 4:
                await trio.sleep(0.05)
    assert [r["id"] for r in history[1:]] == ids
    assert history[0]["id"] not in ids  # ids stay unique across runs


async def test_an_activity_db_that_is_not_a_database_is_a_startup_error(tmp_path: Path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not a database at all" * 100)
    config_path = tmp_path / "config.toml"
    config_path.write_text(models_config("a", extra=f"[activity]\ndb = {json.dumps(str(db))}\n"))
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "llama_swap_trio",
            "serve",
            "--config",
            str(config_path),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    assert str(db) in result.stderr.decode()


async def test_the_access_log_has_a_line_for_a_401_without_the_key(
    start_daemon: StartDaemon,
) -> None:
    config = models_config("a", extra='api_keys = ["sekrit-key"]')
    daemon = await start_daemon(config)
    async with daemon.client() as client:
        wrong = await client.post(
            "/v1/chat/completions?api_key=not-it",
            json=chat("a"),
            headers={"authorization": "Bearer sekrit-key-wrong"},
        )
        assert wrong.status_code == 401
        ok = await client.get("/v1/models?api_key=sekrit-key")
        assert ok.status_code == 200
        served = await client.post("/v1/chat/completions?api_key=sekrit-key", json=chat("a"))
        assert served.status_code == 200
        denied = await daemon.wait_for_line("POST /v1/chat/completions?api_key=")
        allowed = await daemon.wait_for_line("GET /v1/models?api_key=")
        model_line = await daemon.wait_for_line(
            "POST /v1/chat/completions?api_key=[redacted] model=a"
        )
    assert "status=401" in denied
    assert "not-it" not in denied
    assert "status=200" in allowed
    assert "sekrit-key" not in allowed
    assert "[redacted]" in allowed
    # a model request's line has its figures from the feed event
    assert "status=200" in model_line
    assert "queue_ms=-" not in model_line
    assert "load_ms=" in model_line
    assert "completion_tokens=" in model_line
    assert " id=" in model_line
    assert not any("sekrit-key" in line for line in daemon.lines)
