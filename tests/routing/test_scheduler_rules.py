"""The scheduling rules of SPEC 6.5 in the pure scheduler: protected models (rule 8)."""

from __future__ import annotations

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
