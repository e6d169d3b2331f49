"""WatchState folds feed messages (SPEC 5) into what the view shows. Pure: no trio, no sockets."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llama_swap_trio.watch.state import HISTORY, Connection, Link, WatchState
from tests.watch.conftest import FakeClock, recorded_session


def snapshot(*models: dict[str, Any], queue: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "snapshot", "version": "0.1.0", "models": list(models), "queue": queue or []}


def model(
    model_id: str, state: str = "stopped", ttl: float = 0, in_flight: int = 0
) -> dict[str, Any]:
    return {"id": model_id, "state": state, "ttl": ttl, "in_flight": in_flight}


def request(model_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "request",
        "model": model_id,
        "path": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 100.0,
        "ttfb_ms": 10.0,
    } | fields


def test_snapshot_fills_models_queue_and_version(state: WatchState) -> None:
    # given a fresh state
    # when the first message, the snapshot, arrives
    state.apply(
        snapshot(
            {"id": "qwen", "state": "ready", "name": "Qwen", "ttl": 300, "in_flight": 2},
            model("llama", ttl=60),
            queue=[{"model": "llama", "position": 1}],
        )
    )
    # then every model is there, in order, with what the snapshot says
    assert list(state.models) == ["qwen", "llama"]
    qwen = state.models["qwen"]
    assert (qwen.state, qwen.name, qwen.ttl, qwen.in_flight) == ("ready", "Qwen", 300, 2)
    assert state.models["llama"].state == "stopped"
    assert [(e.model, e.position) for e in state.queue] == [("llama", 1)]
    assert state.version == "0.1.0"
    assert state.synced


def test_recorded_session_folds_into_the_final_picture(state: WatchState) -> None:
    # given a recorded session: a request on qwen, a swap qwen -> llama, a request on llama
    for message in recorded_session():
        state.apply(message)
    # then the models show the swap's outcome
    assert state.models["qwen"].state == "stopped"
    assert state.models["qwen"].in_flight == 0
    assert state.models["llama"].state == "ready"
    assert state.models["embed"].state == "ready"
    # the queue emptied again
    assert state.queue == []
    # one swap, finished, with its duration and eviction
    (swap,) = state.swaps
    assert (swap.model, swap.evict, swap.done, swap.ok, swap.duration_ms) == (
        "llama",
        ["qwen"],
        True,
        True,
        2600.0,
    )
    # both requests, oldest first, with status, duration and tokens per second
    assert [(r.model, r.status, r.duration_ms, r.tokens_per_second) for r in state.requests] == [
        ("qwen", 200, 1520.0, 88.9),
        ("llama", 200, 430.0, 51.2),
    ]
    assert state.requests[0].prompt_tokens == 24
    assert state.requests[0].completion_tokens == 128
    # the log line and the lag are kept
    assert [log.line for log in state.logs] == ["srv  update_slots: all slots are idle"]
    assert state.dropped == 7


def test_model_state_changes_state_and_records_errors(state: WatchState) -> None:
    # given a model starting
    state.apply(snapshot(model("qwen", "starting", ttl=300)))
    # when its start fails
    state.apply(
        {
            "type": "model_state",
            "model": "qwen",
            "state": "stopped",
            "previous": "starting",
            "at": 1.0,
            "error": "exited with status 1",
        }
    )
    # then it is stopped with the error shown
    assert state.models["qwen"].state == "stopped"
    assert state.models["qwen"].error == "exited with status 1"
    # and the next change clears the error
    state.apply(
        {
            "type": "model_state",
            "model": "qwen",
            "state": "starting",
            "previous": "stopped",
            "at": 2.0,
        }
    )
    assert state.models["qwen"].error is None


def test_model_state_for_an_unknown_model_adds_a_row(state: WatchState) -> None:
    state.apply(snapshot(model("qwen")))
    state.apply(
        {
            "type": "model_state",
            "model": "new",
            "state": "starting",
            "previous": "stopped",
            "at": 1.0,
        }
    )
    assert list(state.models) == ["qwen", "new"]
    assert state.models["new"].state == "starting"
    assert state.models["new"].ttl is None  # unknown until the next snapshot


def test_stopped_model_has_nothing_in_flight(state: WatchState) -> None:
    state.apply(snapshot(model("qwen", "ready", in_flight=3)))
    state.apply(
        {
            "type": "model_state",
            "model": "qwen",
            "state": "stopped",
            "previous": "stopping",
            "at": 1.0,
        }
    )
    assert state.models["qwen"].in_flight == 0


def test_ttl_counts_down_from_when_the_model_became_ready(
    state: WatchState, clock: FakeClock
) -> None:
    # given a stopped model with a 300 s TTL
    state.apply(snapshot(model("qwen", "starting", ttl=300)))
    row = state.models["qwen"]
    assert state.ttl_left(row) is None  # not ready: no TTL
    # when it becomes ready and 100 s pass
    state.apply(
        {
            "type": "model_state",
            "model": "qwen",
            "state": "ready",
            "previous": "starting",
            "at": 1.0,
        }
    )
    clock.advance(100)
    # then 200 s are left
    assert state.ttl_left(row) == 200
    # and it never goes below zero
    clock.advance(1000)
    assert state.ttl_left(row) == 0


def test_a_finished_request_restarts_the_ttl(state: WatchState, clock: FakeClock) -> None:
    # given a ready model with one request in flight (from the snapshot)
    state.apply(snapshot(model("qwen", "ready", ttl=300, in_flight=1)))
    row = state.models["qwen"]
    # then the TTL is paused while the request runs
    assert state.ttl_left(row) == "paused"
    # when the request ends and 30 s pass
    state.apply(request("qwen"))
    clock.advance(30)
    # then the TTL counts from the end of that request
    assert row.in_flight == 0
    assert state.ttl_left(row) == 270


def test_ttl_is_unknown_for_a_model_idle_since_before_we_connected(state: WatchState) -> None:
    state.apply(snapshot(model("qwen", "ready", ttl=300)))
    assert state.ttl_left(state.models["qwen"]) is None


def test_ttl_zero_means_never(state: WatchState) -> None:
    state.apply(snapshot(model("embed", "ready", ttl=0)))
    assert state.ttl_left(state.models["embed"]) == "never"


def test_an_exact_in_flight_field_wins_over_the_estimate(state: WatchState) -> None:
    # given a daemon that says how many requests are in flight
    state.apply(snapshot(model("qwen", "ready", ttl=300, in_flight=1)))
    # when a request ends while two others still run
    state.apply(request("qwen", in_flight=2))
    # then the count is the daemon's, and the TTL stays paused
    assert state.models["qwen"].in_flight == 2
    assert state.ttl_left(state.models["qwen"]) == "paused"


def test_swap_done_completes_its_start(state: WatchState, clock: FakeClock) -> None:
    state.apply({"type": "swap", "phase": "start", "model": "llama", "evict": ["qwen"]})
    (swap,) = state.swaps
    assert not swap.done
    clock.advance(2)
    state.apply(
        {
            "type": "swap",
            "phase": "done",
            "model": "llama",
            "evict": ["qwen"],
            "ok": False,
            "duration_ms": 2000.0,
            "error": "health check timed out",
        }
    )
    assert list(state.swaps) == [swap]
    assert (swap.done, swap.ok, swap.duration_ms, swap.error) == (
        True,
        False,
        2000.0,
        "health check timed out",
    )


def test_swap_done_without_a_seen_start_is_shown_alone(state: WatchState) -> None:
    state.apply(
        {
            "type": "swap",
            "phase": "done",
            "model": "llama",
            "evict": [],
            "ok": True,
            "duration_ms": 900.0,
        }
    )
    (swap,) = state.swaps
    assert (swap.model, swap.done, swap.ok, swap.duration_ms) == ("llama", True, True, 900.0)


def test_only_the_last_swaps_and_requests_are_kept(state: WatchState) -> None:
    for i in range(HISTORY + 5):
        state.apply(
            {
                "type": "swap",
                "phase": "done",
                "model": f"m{i}",
                "evict": [],
                "ok": True,
                "duration_ms": float(i),
            }
        )
        state.apply(request(f"m{i}"))
    assert len(state.swaps) == HISTORY == 10
    assert len(state.requests) == HISTORY
    assert state.swaps[0].model == "m5"
    assert state.requests[-1].model == "m14"


def test_queue_message_replaces_the_queue(state: WatchState) -> None:
    state.apply(snapshot(queue=[{"model": "a", "position": 1}]))
    state.apply(
        {"type": "queue", "queue": [{"model": "b", "position": 1}, {"model": "c", "position": 2}]}
    )
    assert [(e.model, e.position) for e in state.queue] == [("b", 1), ("c", 2)]


def test_lagged_adds_up_until_the_next_snapshot(state: WatchState) -> None:
    state.apply({"type": "lagged", "dropped": 3})
    state.apply({"type": "lagged", "dropped": 4})
    assert state.dropped == 7
    state.apply(snapshot())
    assert state.dropped == 0


def test_fresh_snapshot_replaces_models_and_queue_but_keeps_history(state: WatchState) -> None:
    # given a session with history
    for message in recorded_session():
        state.apply(message)
    # when the daemon restarted with another configuration and sends its snapshot
    state.apply(
        snapshot(model("mistral", "stopped", ttl=10), queue=[{"model": "mistral", "position": 1}])
    )
    # then the models and the queue are the new daemon's
    assert list(state.models) == ["mistral"]
    assert [e.model for e in state.queue] == ["mistral"]
    # and the recent swaps and requests still tell what happened
    assert len(state.swaps) == 1
    assert len(state.requests) == 2


def test_resync_keeps_what_we_knew_about_idleness(state: WatchState, clock: FakeClock) -> None:
    # given a model we saw become idle
    state.apply(snapshot(model("qwen", "ready", ttl=300, in_flight=1)))
    state.apply(request("qwen"))
    clock.advance(10)
    # when we reconnect to the same daemon and it is still ready and idle
    state.apply(snapshot(model("qwen", "ready", ttl=300)))
    # then the TTL keeps counting from the end of that request
    assert state.ttl_left(state.models["qwen"]) == 290


def test_losing_the_connection_marks_the_state_unsynced(state: WatchState) -> None:
    state.apply(snapshot())
    state.set_connection(Connection(Link.DISCONNECTED, "ws://x/api/events", retry_in=0.5))
    assert not state.synced


def test_connection_texts_say_what_happened() -> None:
    url = "ws://127.0.0.1:8080/api/events"
    assert Connection(Link.UNREACHABLE, url, retry_in=0.5).text == (
        f"cannot connect to {url}, retrying in 0.5s"
    )
    assert Connection(Link.DISCONNECTED, url, retry_in=1).text.startswith(
        "disconnected, reconnecting"
    )
    assert "refused the API key" in Connection(Link.REJECTED, url, status=401, has_key=True).text
    assert "pass --api-key" in Connection(Link.REJECTED, url, status=401).text
    assert "HTTP 404" in Connection(Link.HTTP_ERROR, url, status=404, retry_in=1).text


def test_malformed_messages_are_ignored(state: WatchState) -> None:
    state.apply(snapshot(model("qwen", "ready", ttl=300)))
    bad_messages: list[object] = [
        None,
        [],
        "x",
        3,
        {},
        {"type": 7},
        {"type": "future_thing", "x": 1},
        {"type": "model_state"},
        {"type": "model_state", "model": 1, "state": "ready"},
        {"type": "swap", "phase": "middle", "model": "qwen"},
        {"type": "request"},
        {"type": "log"},
        {"type": "queue", "queue": "nope"},
        {"type": "snapshot", "models": [{"state": "ready"}, 5], "queue": [{"x": 1}]},
    ]
    for bad in bad_messages:
        state.apply(bad)
    # the last one was a (useless) snapshot: it replaced the models with nothing readable
    assert state.models == {}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=6,
)
TYPES = st.sampled_from(["snapshot", "model_state", "swap", "queue", "request", "log", "lagged"])
KEYS = st.sampled_from(
    [
        "model",
        "state",
        "models",
        "queue",
        "phase",
        "evict",
        "ok",
        "duration_ms",
        "in_flight",
        "ttl",
        "id",
        "status",
        "dropped",
        "line",
        "position",
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(TYPES, st.dictionaries(KEYS, JSON, max_size=6)), max_size=8))
def test_no_feed_message_crashes_the_state(messages: list[tuple[str, dict[str, Any]]]) -> None:
    state = WatchState(clock=FakeClock())
    for kind, fields in messages:
        state.apply({**fields, "type": kind})
        for row in state.models.values():
            state.ttl_left(row)
