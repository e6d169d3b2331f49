"""Requests in the watch view (SPEC 6.2): in flight as they run, failed ones with their error
code, queue and load time, and a layout that fits the terminal. Fed by a feed session recorded
from a real daemon (tests/watch/session_requests.jsonl: a stream that waits for its model's
load, a 429 while it runs, a 502 from a start that fails, a client that leaves mid-stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

from llama_swap_trio.watch.render import render
from llama_swap_trio.watch.state import WatchState
from tests.watch.conftest import FakeClock
from tests.watch.fake_feed import FakeFeed
from tests.watch.test_command import running, snapshot, wait_for, watch_command

SESSION = Path(__file__).with_name("session_requests.jsonl")


def recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SESSION.read_text().splitlines() if line.strip()]


def screen(state: WatchState, width: int = 120, height: int | None = None) -> str:
    console = Console(record=True, width=width, height=height or 200, color_system=None)
    console.print(render(state, height=height, width=width))
    return console.export_text()


def replay_until(state: WatchState, clock: FakeClock, last: int) -> None:
    """Apply the session's first ``last`` messages, one second apart."""
    for message in recorded()[:last]:
        clock.advance(1.0)
        state.apply(message)


def index_of(kind: str, nth: int = 1) -> int:
    """The position just after the ``nth`` message of ``kind`` in the session."""
    seen = 0
    for i, message in enumerate(recorded()):
        if message["type"] == kind:
            seen += 1
            if seen == nth:
                return i + 1
    raise AssertionError(f"no {kind} #{nth} in the session")


def test_a_stream_in_flight_shows_elapsed_chunks_and_a_live_rate(clock: FakeClock) -> None:
    state = WatchState(clock=clock, wall=lambda: 0.0)
    replay_until(state, clock, index_of("request_progress", 2))
    (request,) = state.open.values()
    assert (request.model, request.chunks) == ("qwen", 19)
    assert request.rate == pytest.approx(10.0)  # 10 more chunks in one second
    text = screen(state)
    assert "In flight (1)" in text
    row = next(line for line in text.splitlines() if "10.0/s" in line)
    assert "qwen" in row
    assert " 19 " in row
    assert "3676 B" in row
    # the model counts it in flight (it waited for the load, so the router had not yet)
    assert state.models["qwen"].in_flight == 1
    assert state.ttl_left(state.models["qwen"]) in (None, "paused", "never")


def test_failed_requests_show_their_error_queue_and_load_time(clock: FakeClock) -> None:
    state = WatchState(clock=clock)
    replay_until(state, clock, len(recorded()))
    assert state.open == {}
    text = screen(state)
    requests = text[text.index("Last requests") :]
    assert "Last requests, 2 failed" in requests
    limited = next(line for line in requests.splitlines() if " 429 " in line)
    assert "concurrency_limit" in limited
    broken = next(line for line in requests.splitlines() if "broken" in line)
    assert " 502 " in broken
    assert "upstream_error" in broken
    assert "249 ms" in broken  # queue: the failed load it waited for
    assert "248 ms" in broken  # load
    waited = next(line for line in requests.splitlines() if "1.08 s" in line)
    assert "qwen" in waited  # the stream that waited 1.08 s for qwen's load
    assert "In flight: none" in text
    # a failed swap's error keeps its first line only
    assert "failed: [broken] upstream command exited" in text
    assert "fatal: cannot" not in text


def busy_state(clock: FakeClock) -> WatchState:
    """A crowded daemon: 12 models, 10 failed swaps with long errors, 10 requests, 6 in flight."""
    state = WatchState(clock=clock)
    models = [f"model-{i:02d}" for i in range(12)]
    state.apply(snapshot(*models) | {"requests": []})
    for i in range(10):
        error = f"[model-{i:02d}] upstream command exited prematurely (code 3); last output:\n"
        state.apply(
            {
                "type": "swap",
                "phase": "done",
                "model": models[i],
                "evict": models[:3],
                "ok": False,
                "duration_ms": 250.0,
                "error": error + "error: failed to load model\n" * 5,
            }
        )
        state.apply(
            {
                "type": "request",
                "id": f"done-{i}",
                "model": models[i],
                "path": "/v1/chat/completions",
                "status": 502,
                "duration_ms": 300.0,
                "ttfb_ms": None,
                "queue_ms": 290.0,
                "load_ms": 250.0,
                "error": "upstream_error",
            }
        )
    for i in range(6):
        state.apply(
            {
                "type": "request_start",
                "id": f"open-{i}",
                "model": models[i],
                "path": "/v1/chat/completions",
                "at": 0.0,
            }
        )
        state.apply({"type": "request_progress", "id": f"open-{i}", "chunks": 5, "bytes": 900})
    return state


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 45), (60, 16)])
def test_a_crowded_view_fits_the_terminal(clock: FakeClock, width: int, height: int) -> None:
    text = screen(busy_state(clock), width=width, height=height).rstrip("\n")
    lines = text.splitlines()
    assert len(lines) <= height - 1, text
    assert all(len(line) <= width for line in lines), text
    # nothing pushes the requests off the screen: each section is there with some rows
    assert "In flight (" in text
    assert "open-" not in text  # ids are not shown; rows are
    assert sum("model-0" in line and "/s" not in line for line in lines) >= 3
    assert "Last requests" in text
    assert sum("upstream_error" in line for line in lines) >= 1
    # the failed swaps take at most a few rows, one line each
    assert sum("failed:" in line for line in lines) <= 3
    assert "error: failed to load model" not in text


def test_without_a_height_everything_is_shown(clock: FakeClock) -> None:
    text = screen(busy_state(clock))
    assert sum("upstream_error" in line for line in text.splitlines()) == 10
    assert "In flight (6)" in text


async def test_the_api_key_can_come_from_the_environment(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = FakeFeed(nursery)
    feed.reject_status = 401
    await feed.start()
    monkeypatch.setenv("LLAMA_SWAP_TRIO_API_KEY", "from-env")
    async with running(watch_command("--url", feed.url)) as ran:
        await wait_for(lambda: feed.handshakes >= 1)
    assert ran.process.returncode == 2
    assert feed.headers["authorization"] == "Bearer from-env"


@pytest.mark.parametrize(("width", "height"), [(80, 24), (60, 16)])
def test_a_crowded_view_with_a_gpu_budget_still_fits(
    clock: FakeClock, width: int, height: int
) -> None:
    state = busy_state(clock)
    state.gpu_memory = 24 * 1024**3
    state.sizes = {model_id: (8 * 1024**3, 0) for model_id in state.models}
    text = screen(state, width=width, height=height).rstrip("\n")
    lines = text.splitlines()
    assert len(lines) <= height - 1, text
    assert all(len(line) <= width for line in lines), text
    assert any(line.startswith("GPU memory: ") for line in lines), text
