"""/logs and /logs/stream...: views, backlog, no-history, lossy slow readers, unknown model."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from llama_swap_trio.http.logs import LogViews
from llama_swap_trio.logbuffer import LogBuffer
from tests.http.appkit import Daemonish, config, harness, model, streaming


def kit_with_lines() -> Daemonish:
    kit = Daemonish(upstream_logs={"org/a": LogBuffer(), "b": LogBuffer()})
    kit.proxy_logs.append("proxy one")
    kit.upstream_logs["org/a"].append("a says hi")
    kit.upstream_logs["b"].append("b says hi")
    return kit


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("proxy", "proxy one\n"),
        ("upstream", "[b] b says hi\n[org/a] a says hi\n"),
        ("both", "proxy one\n[b] b says hi\n[org/a] a says hi\n"),
        ("none", ""),
    ],
)
async def test_logs_shows_what_log_to_stdout_copies(
    monkeypatch: pytest.MonkeyPatch, mode: str, expected: str
) -> None:
    cfg = config(model("org/a"), model("b"), log_to_stdout=mode)
    async with harness(cfg, monkeypatch, kit_with_lines()) as h:
        response = await h.client.get("/logs")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == expected


async def test_model_stream_sends_backlog_then_live_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = kit_with_lines()
    cfg = config(model("org/a", aliases=("alias-a",)), model("b"))
    async with (
        harness(cfg, monkeypatch, kit) as h,
        streaming(h.url, "/logs/stream/alias-a") as stream,
    ):
        assert stream.status == 200
        assert stream.headers["x-accel-buffering"] == "no"
        assert (await stream.until("a says hi\n")).endswith("\r\na says hi\n")
        kit.upstream_logs["b"].append("not mine")
        kit.upstream_logs["org/a"].append("later")
        assert "not mine" not in await stream.until("later\n")


async def test_no_history_skips_the_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = kit_with_lines()
    async with (
        harness(config(model("org/a"), model("b")), monkeypatch, kit) as h,
        streaming(h.url, "/logs/stream/proxy?no-history") as stream,
    ):
        kit.proxy_logs.append("fresh")
        assert "a says hi" not in await stream.until("fresh\n")


async def test_upstream_stream_merges_every_model_with_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit = kit_with_lines()
    async with (
        harness(config(model("org/a"), model("b")), monkeypatch, kit) as h,
        streaming(h.url, "/logs/stream/upstream") as stream,
    ):
        kit.proxy_logs.append("proxy two")
        kit.upstream_logs["b"].append("end")
        seen = await stream.until("[b] end\n")
        if "[org/a]" not in seen:  # the two models' lines may come in either order
            seen += await stream.until("[org/a] a says hi\n")
        assert "[org/a] a says hi\n" in seen
        assert "[b] b says hi\n" in seen
        assert "proxy" not in seen


async def test_the_daemons_combined_upstream_buffer_is_used_when_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit = kit_with_lines()
    combined = LogBuffer()
    combined.append("[org/a] first")
    combined.append("[b] second")
    kit.upstream_logs = {"": combined, **kit.upstream_logs}
    cfg = config(model("org/a"), model("b"), log_to_stdout="upstream")
    async with harness(cfg, monkeypatch, kit) as h:
        assert (await h.client.get("/logs")).text == "[org/a] first\n[b] second\n"
        async with streaming(h.url, "/logs/stream/upstream") as stream:
            assert "[org/a] first\n" in await stream.until("[b] second\n")
        async with streaming(h.url, "/logs/stream/b") as stream:
            assert (await stream.until("b says hi\n")).endswith("\r\nb says hi\n")


async def test_unknown_model_stream_is_404(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.get("/logs/stream/nope")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


async def test_stream_ends_cleanly_when_the_buffers_close(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = kit_with_lines()
    async with (
        harness(config(model("org/a"), model("b")), monkeypatch, kit) as h,
        streaming(h.url, "/logs/stream") as stream,
    ):
        await stream.until("proxy one\n")
        kit.proxy_logs.close()
        await stream.until("\r\n0\r\n\r\n")  # the last chunk: a clean end


async def test_slow_reader_loses_lines_and_is_told_how_many() -> None:
    # given a stream whose client stops reading after the first line
    buffer = LogBuffer()
    views = LogViews(config(), buffer, {})
    gate = trio.Event()
    bodies: list[bytes] = []
    leave = trio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            if len(bodies) == 1:
                await gate.wait()

    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(views.stream, {"query_string": b""}, receive, send, "proxy")
        buffer.append("first")
        with trio.fail_after(5):
            while not bodies:
                await trio.sleep(0.01)
        # when far more lines arrive than a reader may hold
        for n in range(1500):
            buffer.append(f"line {n}")  # (a reader counts what it loses as lines arrive)
        gate.set()
        with trio.fail_after(5):
            while len(bodies) < 2:
                await trio.sleep(0.01)
        leave.set()
    # then the next chunk says how many were lost, and the writer never waited
    text = bodies[1].decode()
    assert text.startswith("[... 500 lines dropped")
    assert text.count("\n") == 1001
