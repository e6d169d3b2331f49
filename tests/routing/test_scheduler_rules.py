"""The scheduling rules of SPEC 6.5 in the pure scheduler (rules 8-14 of its docstring)."""

from __future__ import annotations

import attrs

from llama_swap_trio.config.model import Config
from llama_swap_trio.routing.scheduler import Decision
from llama_swap_trio.upstream.api import UpstreamState

from .builders import group, group_config, single_group
from .recorder import Harness

PROTECT_A = {"a": {"protected": True}}


def test_request_that_would_evict_a_protected_model_is_refused_409_at_once() -> None:
    h = Harness(single_group("a", "b", settings=PROTECT_A))
    h.ready("a")
    rid = h.req("b")
    error = h.fx.refused[rid]
    assert (error.status, error.code) == (409, "model_protected")
    assert "'a'" in error.message
    assert "POST /api/models/unload/a" in error.message
    assert "force" not in error.message  # a request cannot force; only the API load can
    assert h.load_targets == ["a"]
    assert h.s.state("a") == UpstreamState.READY
    assert h.s.admitted("b") == 0


def test_protected_model_with_requests_in_flight_refuses_instead_of_queueing() -> None:
    h = Harness(single_group("a", "b", settings=PROTECT_A))
    a = h.req("a")
    h.ok("a")
    b = h.req("b")
    assert h.fx.refused[b].code == "model_protected"
    assert h.s.queue() == ()
    h.s.serve_done(a)
    assert h.load_targets == ["a"]


def test_request_queued_behind_a_protected_load_is_refused_once_it_is_ready() -> None:
    h = Harness(single_group("a", "b", settings=PROTECT_A))
    h.req("a")  # a is starting, not ready yet: b queues behind the load
    b = h.req("b")
    assert h.s.decide("b")[0] is Decision.QUEUE
    h.ok("a")
    assert h.fx.refused[b].code == "model_protected"


def test_api_load_names_force_and_force_evicts_the_protected_model() -> None:
    h = Harness(single_group("a", "b", settings=PROTECT_A))
    h.ready("a")
    plain = h.req("b", explicit=True)
    assert h.fx.refused[plain].code == "model_protected"
    assert "POST /api/models/load/b?force=true" in h.fx.refused[plain].message
    forced = h.req("b", explicit=True, force=True)
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    h.ok("b")
    assert forced in h.fx.granted


def test_forced_load_that_must_wait_keeps_its_force_in_the_queue() -> None:
    h = Harness(single_group("a", "b", settings=PROTECT_A))
    a = h.req("a")
    h.ok("a")
    forced = h.req("b", explicit=True, force=True)
    assert h.s.queue()[0].model == "b"  # a is busy: the forced load waits, it is not refused
    h.s.serve_done(a)
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    h.ok("b")
    assert forced in h.fx.granted


def test_protected_model_still_stops_by_ttl_and_unload() -> None:
    h = Harness(single_group("a", "b", settings=PROTECT_A))
    h.ready("a")
    assert h.s.idle_expired("a")
    h.s.stop_done(["a"])
    h.ready("a")
    assert h.s.unload(["a"]) == frozenset({"a"})
    h.s.stop_done(["a"])
    b = h.req("b")
    h.ok("b")
    assert b in h.fx.granted


def test_protected_model_that_is_not_evicted_does_not_block_anything() -> None:
    config = group_config(
        group("big", "a", persistent=True),
        group("small", "b", "c"),
        settings=PROTECT_A,
    )
    h = Harness(config)
    h.ready("a")
    b = h.req("b")  # a's group is persistent: loading b keeps a
    assert h.fx.loads[-1] == ("b", frozenset())
    h.ok("b")
    assert b in h.fx.granted


# -- rule 10: min_residency ---------------------------------------------------------------------


def test_request_that_would_evict_a_young_model_waits_until_it_has_been_resident_long_enough() -> (
    None
):
    h = Harness(single_group("a", "b", settings={"a": {"min_residency": 10.0}}))
    h.ready("a")  # ready at t = 0
    h.advance(4.0)
    b = h.req("b")
    assert h.load_targets == ["a"]
    assert h.s.waiting_requests()[0].reason == "min_residency"
    assert h.s.next_deadline() == 10.0
    h.advance(5.9)
    assert h.load_targets == ["a"]
    h.advance(0.1)
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    h.ok("b")
    assert b in h.fx.granted


def test_min_residency_counts_from_ready_and_does_not_hold_ttl_or_unload() -> None:
    h = Harness(single_group("a", "b", settings={"a": {"min_residency": 60.0}}))
    h.ready("a")
    assert h.s.idle_expired("a")  # rule 10 is about evictions for another model only
    h.s.stop_done(["a"])
    h.advance(100.0)
    h.ready("a")  # ready again at t = 100: young again
    h.req("b")
    assert h.load_targets == ["a", "a"]
    assert h.s.unload(["a"]) == frozenset({"a"})


# -- rule 11: the starvation guard ---------------------------------------------------------------


def with_starvation(config: Config, seconds: float) -> Config:
    return attrs.evolve(config, routing=attrs.evolve(config.routing, starvation_after=seconds))


def test_steady_stream_for_a_ready_model_no_longer_starves_a_waiting_load() -> None:
    h = Harness(with_starvation(single_group("a", "b"), 30.0))
    first = h.req("a")
    h.ok("a")
    b = h.req("b")  # waits for a's requests to finish
    # a steady stream for a: every request overlaps the next, so a is never idle
    live = first
    for _ in range(29):
        h.advance(1.0)
        nxt = h.req("a")
        assert nxt in h.fx.granted  # before the guard: served at once
        h.s.serve_done(live)
        live = nxt
    h.advance(1.0)  # b has waited 30 s
    held = h.req("a")
    assert held not in h.fx.granted
    assert [w.reason for w in h.s.waiting_requests() if w.rid == held] == ["starvation_guard"]
    h.s.serve_done(live)  # the last a request drains: b's load starts
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    h.ok("b")
    assert b in h.fx.granted
    assert h.now - 0.0 <= 31.0


def test_starvation_guard_is_off_with_zero() -> None:
    h = Harness(with_starvation(single_group("a", "b"), 0.0))
    a = h.req("a")
    h.ok("a")
    h.req("b")
    h.advance(1000.0)
    assert h.req("a") in h.fx.granted
    h.s.serve_done(a)


# -- rule 12: queue_timeout ----------------------------------------------------------------------


def test_request_that_waited_its_queue_timeout_gets_503_with_retry_after() -> None:
    h = Harness(single_group("a", "b", settings={"b": {"queue_timeout": 5.0}}))
    a = h.req("a")
    h.ok("a", seconds=2.0)
    b = h.req("b")  # waits for a's request; b's load time is unknown: no refusal at once
    assert b not in h.fx.refused
    h.advance(5.0)
    error = h.fx.refused[b]
    assert (error.status, error.code) == (503, "queue_timeout")
    assert dict(error.headers)["retry-after"] == "1"
    assert h.s.queue() == ()
    assert h.s.admitted("b") == 0
    h.s.serve_done(a)
    assert h.load_targets == ["a"]  # a refused request never causes a load


def test_request_whose_estimated_wait_exceeds_its_queue_timeout_is_refused_at_once() -> None:
    h = Harness(single_group("a", "b", settings={"b": {"queue_timeout": 5.0}}))
    h.ready("b")
    h.s.unload(["b"])
    h.s.stop_done(["b"])
    slow = h.req("b")
    h.s.load_done("b", None, 8.0)  # measured: b takes 8 s to load
    h.s.serve_done(slow)
    h.ready("a")
    b = h.req("b")
    error = h.fx.refused[b]
    assert (error.code, dict(error.headers)["retry-after"]) == ("queue_timeout", "8")
    assert "estimated wait of 8.0 s" in error.message
    assert h.load_targets[-1] == "a"  # refused before any load
    # an API load has no queue timeout
    api = h.req("b", explicit=True)
    assert h.load_targets[-1] == "b"
    h.ok("b")
    assert api in h.fx.granted


def test_a_request_waiting_for_a_load_also_times_out_and_the_load_goes_on() -> None:
    h = Harness(single_group("a", settings={"a": {"queue_timeout": 3.0}}))
    rid = h.req("a")
    h.advance(3.0)
    assert h.fx.refused[rid].code == "queue_timeout"
    assert h.s.state("a") == UpstreamState.STARTING
    h.ok("a")
    assert h.s.state("a") == UpstreamState.READY


# -- rule 13: autoload = false -------------------------------------------------------------------


def test_autoload_off_refuses_409_until_an_api_load_loads_it() -> None:
    h = Harness(single_group("a", "b", settings={"a": {"autoload": False}}))
    rid = h.req("a")
    error = h.fx.refused[rid]
    assert (error.status, error.code) == (409, "model_not_loaded")
    assert "POST /api/models/load/a" in error.message
    assert h.fx.loads == []
    api = h.req("a", explicit=True)
    joined = h.req("a")  # a load is under way: joining it is fine
    h.ok("a")
    assert {api, joined} <= set(h.fx.granted)
    assert h.req("a") in h.fx.granted


def test_autoload_off_model_evicted_by_another_is_not_loaded_back_by_a_request() -> None:
    h = Harness(single_group("a", "b", settings={"a": {"autoload": False}}))
    api = h.req("a", explicit=True)
    h.ok("a")
    h.s.serve_done(api)
    h.ready("b")
    assert h.fx.refused[h.req("a")].code == "model_not_loaded"


# -- rule 14: requests that do not hold their model ----------------------------------------------


def test_a_request_that_does_not_hold_its_model_blocks_no_swap_and_no_ttl() -> None:
    h = Harness(single_group("a", "b"))
    ws = h.req("a", hold=False)
    h.ok("a")
    assert ws in h.fx.granted
    assert h.s.in_flight("a") == 0
    assert h.s.admitted("a") == 0
    b = h.req("b")
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    h.ok("b")
    assert b in h.fx.granted
    h.s.cancel(ws)  # its handler leaves later: nothing to count down
    assert h.s.in_flight("a") == 0
