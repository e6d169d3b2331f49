"""The view, rendered to a recording console, shows what the state holds."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from llama_swap_trio.watch.render import format_duration_ms, format_seconds, render
from llama_swap_trio.watch.state import Connection, Link, WatchState
from tests.watch.conftest import FakeClock, recorded_session
from tests.watch.test_state import JSON, KEYS, TYPES

URL = "ws://127.0.0.1:8080/api/events"


def screen(state: WatchState) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(render(state))
    return console.export_text()


def line_with(text: str, needle: str, *expected: str) -> str:
    """The first line of ``text`` containing ``needle``; it must also contain each ``expected``."""
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"no line with {needle!r} in:\n{text}"
    missing = [part for part in expected if part not in lines[0]]
    assert not missing, f"{missing} not in {lines[0]!r}"
    return lines[0]


def section(text: str, title: str) -> str:
    return text[text.index(title) :]


def test_models_show_state_in_flight_and_ttl_left(state: WatchState, clock: FakeClock) -> None:
    # given a snapshot: qwen busy, llama idle with a known idle time, embed without TTL
    state.set_connection(Connection(Link.CONNECTED, URL))
    state.apply(
        {
            "type": "snapshot",
            "version": "0.1.0",
            "queue": [],
            "models": [
                {"id": "qwen", "state": "ready", "name": "Qwen 2.5", "ttl": 300, "in_flight": 2},
                {"id": "llama", "state": "starting", "ttl": 120, "in_flight": 0},
                {"id": "embed", "state": "ready", "ttl": 0, "in_flight": 0},
                {"id": "old", "state": "stopped", "ttl": 60, "in_flight": 0},
            ],
        }
    )
    state.apply(
        {
            "type": "model_state",
            "model": "llama",
            "state": "ready",
            "previous": "starting",
            "at": 1.0,
        }
    )
    clock.advance(45)
    # when the view is drawn
    text = screen(state)
    # then each model row shows state, in flight and TTL left
    assert "connected to ws://127.0.0.1:8080/api/events" in text
    assert "daemon 0.1.0" in text
    models = section(text, "Models")
    line_with(models, "qwen", "Qwen 2.5", "ready", " 2 ", "paused")
    line_with(models, "llama", "ready", "1m 15s")
    line_with(models, "embed", "never")
    line_with(models, "old", "stopped", " - ")


def test_recorded_session_shows_queue_swaps_and_requests(
    state: WatchState, clock: FakeClock
) -> None:
    # given a recorded session, replayed up to the point where llama is queued
    messages = recorded_session()
    for message in messages[:4]:
        state.apply(message)
    text = screen(state)
    # then the queue shows llama first, and the swap under way
    assert "Queue: 1. llama" in text
    line_with(section(text, "Last swaps"), "llama", "qwen", "loading")
    # when the rest of the session arrives, 5 s later
    clock.advance(5)
    for message in messages[4:]:
        state.apply(message)
    text = screen(state)
    # then the swap is done with its duration, the queue is empty
    assert "Queue: empty" in text
    line_with(section(text, "Last swaps"), "llama", "qwen", "ok", "2.60 s")
    # and the requests show status, duration, tokens per second and tokens, newest first
    requests = section(text, "Last requests")
    line_with(requests, "/v1/completions", "llama", "200", "430 ms", "40 ms", "51.2", "5 → 20")
    line_with(
        requests, "/v1/chat/completions", "qwen", "200", "1.52 s", "96 ms", "88.9", "24 → 128"
    )
    assert requests.index("/v1/completions") < requests.index("/v1/chat/completions")
    # and the lag and the log line are shown
    assert "missed 7 event(s)" in text
    assert "all slots are idle" in text


def test_failed_swap_and_error_status_are_shown(state: WatchState) -> None:
    state.apply(
        {
            "type": "swap",
            "phase": "done",
            "model": "qwen",
            "evict": [],
            "ok": False,
            "duration_ms": 30000.0,
            "error": "health check timed out",
        }
    )
    state.apply(
        {
            "type": "request",
            "model": "qwen",
            "path": "/v1/chat/completions",
            "status": 502,
            "duration_ms": 12.0,
            "ttfb_ms": None,
        }
    )
    text = screen(state)
    line_with(text, "failed:", "health check timed out", "30.00 s")
    line_with(text, "502", "12 ms", " - ")


def test_connection_notices_are_shown() -> None:
    state = WatchState(clock=FakeClock())
    cases: list[tuple[Connection, str]] = [
        (Connection(Link.CONNECTING, URL), f"connecting to {URL}"),
        (Connection(Link.UNREACHABLE, URL, retry_in=2), f"cannot connect to {URL}, retrying in 2s"),
        (Connection(Link.DISCONNECTED, URL, retry_in=0.5), "disconnected, reconnecting"),
        (Connection(Link.REJECTED, URL, status=401, has_key=True), "refused the API key"),
        (Connection(Link.REJECTED, URL, status=401), "needs an API key, pass --api-key"),
    ]
    for connection, expected in cases:
        state.set_connection(connection)
        assert expected in screen(state)


def test_models_are_marked_stale_while_disconnected(state: WatchState) -> None:
    # given a view that showed a snapshot
    state.set_connection(Connection(Link.CONNECTED, URL))
    state.apply({"type": "snapshot", "models": [{"id": "qwen", "state": "ready"}], "queue": []})
    assert "not connected" not in screen(state)
    # when the connection is lost
    state.set_connection(Connection(Link.DISCONNECTED, URL, retry_in=0.5))
    # then the rows stay, marked as possibly out of date
    text = screen(state)
    assert "Models (as last seen; not connected)" in text
    assert "qwen" in text


def test_empty_view_says_so() -> None:
    text = screen(WatchState(clock=FakeClock()))
    assert "no models yet" in text
    assert "Queue: empty" in text
    assert "Swaps: none yet" in text
    assert "Requests: none yet" in text


def test_durations_are_readable() -> None:
    assert format_duration_ms(None) == "-"
    assert format_duration_ms(350.4) == "350 ms"
    assert format_duration_ms(1234.0) == "1.23 s"
    assert format_duration_ms(125_000.0) == "2m 05s"
    assert format_seconds(42.2) == "42s"
    assert format_seconds(3 * 3600 + 120) == "3h 02m"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(TYPES, st.dictionaries(KEYS, JSON, max_size=6)), max_size=6))
def test_no_feed_message_crashes_the_view(messages: list[tuple[str, dict[str, Any]]]) -> None:
    state = WatchState(clock=FakeClock())
    for kind, fields in messages:
        state.apply({**fields, "type": kind})
    screen(state)


def test_the_gpu_budget_line_follows_the_model_states(clock: FakeClock) -> None:
    gib = 1024**3
    state = WatchState(clock=clock)
    message = {
        "type": "snapshot",
        "version": "0.1.0",
        "models": [
            {"id": "a", "state": "ready", "ttl": 0, "in_flight": 0},
            {"id": "b", "state": "stopped", "ttl": 0, "in_flight": 0},
        ],
        "queue": [],
        "resources": {
            "gpu_memory": 24 * gib,
            "used": 8 * gib,
            "free": 16 * gib,
            "models": [],
            "sizes": {"a": [8 * gib, 0], "b": [12 * gib, 2 * gib]},
        },
    }
    state.apply(message)
    line_with(screen(state), "GPU memory:", "8.0GiB of 24.0GiB used", "16.0GiB free")
    state.apply({"type": "model_state", "model": "b", "state": "ready", "previous": "starting"})
    line_with(screen(state), "GPU memory:", "20.0GiB of 24.0GiB used", "4.0GiB free")
    state.apply({"type": "model_state", "model": "b", "state": "sleeping", "previous": "ready"})
    line_with(screen(state), "GPU memory:", "10.0GiB of 24.0GiB used")
    line_with(screen(state), "b", "sleeping")


def test_no_budget_line_without_resources(clock: FakeClock) -> None:
    state = WatchState(clock=clock)
    state.apply({"type": "snapshot", "version": "0.1.0", "models": [], "queue": []})
    assert "GPU memory" not in screen(state)
