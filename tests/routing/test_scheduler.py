"""The scheduler's decision tree, without trio (llama-swap's fifo_test.go behaviours, our own)."""

from __future__ import annotations

from llama_swap_trio import errors
from llama_swap_trio.routing.api import Progress, QueueEntry
from llama_swap_trio.routing.scheduler import Decision
from llama_swap_trio.upstream.api import UpstreamState

from .builders import group, group_config, matrix_config, single_group
from .recorder import Harness


def test_unknown_model_is_refused_404_without_a_load() -> None:
    h = Harness(single_group("a"))
    rid = h.req("nope")
    assert h.fx.refused[rid].status == 404
    assert h.fx.loads == []


def test_stopped_model_starts_a_load_then_is_served() -> None:
    h = Harness(single_group("a"))
    rid = h.req("a")
    assert h.fx.loads == [("a", frozenset())]
    assert h.s.state("a") == UpstreamState.STARTING
    assert h.fx.told[rid] == [Progress("loading")]
    h.ok("a", seconds=2.5)
    assert h.fx.granted == {rid: "a"}
    assert h.fx.load_seconds[rid] == 2.5
    assert h.s.in_flight("a") == 1
    assert h.fx.in_flight == {"a": 1}


def test_ready_model_with_nothing_to_evict_takes_the_fast_path() -> None:
    h = Harness(single_group("a", "b"))
    h.ready("a")
    loads = len(h.fx.loads)
    rid = h.req("a")
    assert h.fx.granted[rid] == "a"
    assert h.fx.load_seconds[rid] == 0.0
    assert len(h.fx.loads) == loads


def test_requests_for_a_model_being_loaded_join_that_load() -> None:
    h = Harness(single_group("a"))
    rids = [h.req("a") for _ in range(3)]
    assert h.load_targets == ["a"]
    h.ok("a")
    assert sorted(h.fx.granted) == rids
    assert h.s.in_flight("a") == 3


def test_failed_load_fails_every_waiter_and_the_next_request_retries() -> None:
    h = Harness(single_group("a"))
    rids = [h.req("a") for _ in range(3)]
    h.fail("a", errors.upstream_error("a", "exited"))
    assert {h.fx.refused[r].status for r in rids} == {502}
    assert h.s.state("a") == UpstreamState.STOPPED
    assert h.s.admitted("a") == 0
    retry = h.req("a")
    assert h.load_targets == ["a", "a"]
    h.ok("a")
    assert retry in h.fx.granted


def test_load_that_would_evict_a_loading_model_queues_until_it_is_served_and_done() -> None:
    h = Harness(single_group("a", "b"))
    a = h.req("a")
    b = h.req("b")
    assert h.s.queue() == (QueueEntry("b", 1),)
    assert h.fx.told[b] == [Progress("queued", position=1)]
    h.ok("a")
    assert a in h.fx.granted
    assert h.load_targets == ["a"]  # a is busy now: b still waits
    h.s.serve_done(a)
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    assert h.s.state("a") == UpstreamState.STOPPING
    h.ok("b")
    assert b in h.fx.granted
    assert h.s.state("a") == UpstreamState.STOPPED


def test_no_eviction_while_the_victim_serves() -> None:
    h = Harness(single_group("a", "b"))
    h.ready("a")
    r1, r2 = h.req("a"), h.req("a")
    b = h.req("b")
    assert h.s.decide("b")[0] is Decision.QUEUE
    h.s.serve_done(r1)
    assert h.load_targets == ["a"]
    h.s.serve_done(r2)
    assert h.load_targets == ["a", "b"]
    assert b in h.s.waiting()


def test_loads_with_disjoint_evictions_run_in_parallel() -> None:
    config = group_config(group("g", "a", exclusive=False), group("h", "b", exclusive=False))
    h = Harness(config)
    h.req("a")
    h.req("b")
    assert h.s.loads() == {"a": frozenset(), "b": frozenset()}


def test_loads_with_overlapping_evictions_do_not_run_in_parallel() -> None:
    config = group_config(
        group("gm", "m"),
        group("gx", "x", persistent=True),
        group("gy", "y", persistent=True),
    )
    h = Harness(config)
    h.ready("m")
    h.req("x")
    y = h.req("y")
    assert h.s.loads() == {"x": frozenset({"m"})}
    assert y in h.s.waiting()
    h.ok("x")
    assert h.s.loads() == {"y": frozenset()}  # x is persistent, m is gone


def test_one_load_completion_can_start_several_queued_loads() -> None:
    config = group_config(
        group("gt", "t"),
        group("gb", "b1", "b2", exclusive=False),
        group("gc", "c1", "c2", exclusive=False),
    )
    h = Harness(config)
    h.ready("b1")
    h.ready("c1")
    t = h.req("t")
    h.s.cancel(t)  # nobody waits for t any more; its load still runs
    h.req("b2")
    h.req("c2")
    assert set(h.s.loads()) == {"t"}
    h.ok("t")
    assert set(h.s.loads()) == {"b2", "c2"}


def test_requests_for_the_same_model_are_served_together() -> None:
    h = Harness(single_group("a", "b", "c"))
    rids = [h.req(m) for m in "abcabc"]
    for model in "abc":
        h.ok(model)
        served = [r for r in h.fx.grant_order if h.fx.granted[r] == model]
        for rid in served:
            h.s.serve_done(rid)
    assert h.load_targets == ["a", "b", "c"]
    assert h.models_of(h.fx.grant_order) == list("aabbcc")
    assert set(h.fx.grant_order) == set(rids)


def test_a_grant_to_a_departed_handler_does_not_leak_in_flight() -> None:
    h = Harness(single_group("a", "b"))
    a = h.req("a")
    h.fx.gone.add(a)
    h.ok("a")
    assert h.fx.failed_grants == [a]
    assert h.s.in_flight("a") == 0
    assert h.s.admitted("a") == 0
    h.s.cancel(a)  # the handler's cancel arrives later: nothing to do
    h.req("b")
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))


def test_shutdown_refuses_load_waiters_and_queued_requests_and_everything_after() -> None:
    h = Harness(single_group("a", "b"))
    a, b = h.req("a"), h.req("b")
    h.s.shutdown()
    assert h.fx.refused[a].code == "shutting_down"
    assert h.fx.refused[b].code == "shutting_down"
    assert h.s.queue() == ()
    later = h.req("a")
    assert h.fx.refused[later].status == 503
    h.ok("a")  # the load under way completes for nobody
    assert h.fx.granted == {}
    assert h.load_targets == ["a"]


def test_unload_refuses_waiters_and_queued_requests_of_that_model_only() -> None:
    config = group_config(group("g", "a", exclusive=False), group("h", "b", "c", exclusive=False))
    h = Harness(config)
    h.ready("c")
    c = h.req("c")  # in flight: b's load must wait for it
    a, b = h.req("a"), h.req("b")
    assert b in h.s.waiting()
    assert set(h.s.loads()) == {"a"}
    stopped = h.s.unload(["b"])
    assert stopped == frozenset()  # b was not running
    assert h.fx.refused[b].code == "model_unloaded"
    stopped = h.s.unload(["a"])
    assert stopped == frozenset({"a"})
    assert h.fx.refused[a].code == "model_unloaded"
    assert h.s.state("a") == UpstreamState.STOPPING
    assert c not in h.fx.refused  # in-flight requests are not touched


def test_unload_during_a_load_makes_new_requests_wait_for_load_and_stop() -> None:
    h = Harness(single_group("a"))
    h.req("a")
    assert h.s.unload(["a"]) == frozenset({"a"})
    again = h.req("a")
    assert again in h.s.waiting()
    assert h.load_targets == ["a"]
    h.fail("a", errors.model_unloaded("a"))  # the stop aborted the start
    assert again not in h.fx.refused
    assert h.load_targets == ["a"]
    h.s.stop_done(["a"])
    assert h.load_targets == ["a", "a"]
    h.ok("a")
    assert again in h.fx.granted


def test_unload_all_stops_every_running_model() -> None:
    config = group_config(group("g", "a", "b", swap=False))
    h = Harness(config)
    h.ready("a")
    h.ready("b")
    assert h.s.unload(None) == frozenset({"a", "b"})
    h.s.stop_done(["a", "b"])
    assert h.s.running() == frozenset()


def test_queue_is_ordered_by_priority_then_arrival() -> None:
    h = Harness(single_group("a", "lo", "hi", "mid", priority={"hi": 10, "mid": 5}))
    h.ready("a")
    busy = h.req("a")
    lo1, hi, lo2, mid = h.req("lo"), h.req("hi"), h.req("lo"), h.req("mid")
    assert [e.model for e in h.s.queue()] == ["hi", "mid", "lo", "lo"]
    assert h.fx.told[lo1][-1] == Progress("queued", position=3)
    h.s.serve_done(busy)
    assert h.fx.loads[-1][0] == "hi"
    assert {hi} <= h.s.waiting()
    assert {lo1, lo2, mid} <= h.s.waiting()


def test_queue_event_on_every_change_of_the_waiting_queue() -> None:
    h = Harness(single_group("a", "b"))
    h.req("a")
    assert h.fx.queues == []  # a load waiter is not in the queue
    b = h.req("b")
    assert h.fx.queues == [(QueueEntry("b", 1),)]
    h.s.cancel(b)
    assert h.fx.queues[-1] == ()


def test_cancelled_queued_request_never_causes_a_load() -> None:
    h = Harness(single_group("a", "b"))
    a = h.req("a")
    b = h.req("b")
    h.s.cancel(b)
    h.ok("a")
    h.s.serve_done(a)
    assert h.load_targets == ["a"]
    assert b not in h.fx.granted
    assert b not in h.fx.refused


def test_cancelled_load_waiter_leaves_the_load_which_completes() -> None:
    h = Harness(single_group("a"))
    a1, a2 = h.req("a"), h.req("a")
    h.s.cancel(a1)
    h.ok("a")
    assert list(h.fx.granted) == [a2]
    assert h.s.state("a") == UpstreamState.READY
    assert h.s.admitted("a") == 1


def test_cancel_after_grant_counts_as_serve_done_exactly_once() -> None:
    h = Harness(single_group("a"))
    a = h.req("a")
    h.ok("a")
    h.s.cancel(a)
    h.s.serve_done(a)
    h.s.cancel(a)
    assert h.s.in_flight("a") == 0
    assert h.fx.in_flight == {"a": 0}


def test_concurrency_limit_counts_queued_waiting_and_served_requests() -> None:
    h = Harness(single_group("a", "b", limits={"b": 2}))
    h.ready("a")
    busy = h.req("a")
    b1, b2 = h.req("b"), h.req("b")  # queued behind a's in-flight request
    over = h.req("b")
    assert h.fx.refused[over].status == 429
    assert h.fx.refused[over].headers == (("retry-after", "1"),)
    h.s.cancel(b1)
    b3 = h.req("b")
    assert b3 in h.s.waiting()
    h.s.serve_done(busy)
    h.ok("b")
    assert {b2, b3} <= set(h.fx.granted)
    assert h.fx.refused[h.req("b")].status == 429


def test_concurrency_limit_zero_means_no_limit() -> None:
    h = Harness(single_group("a"))
    rids = [h.req("a") for _ in range(50)]
    h.ok("a")
    assert len(h.fx.granted) == len(rids)


def test_require_ready_serves_only_a_ready_model() -> None:
    h = Harness(single_group("a", "b"))
    rid = h.req("a", require_ready=True)
    assert h.fx.refused[rid].code == "model_not_loaded"
    assert h.fx.loads == []
    assert h.s.admitted("a") == 0
    h.ready("a")
    assert h.req("a", require_ready=True) in h.fx.granted
    assert h.fx.refused[h.req("b", require_ready=True)].status == 409


def test_ttl_stops_only_an_idle_ready_model() -> None:
    h = Harness(single_group("a", "b"))
    assert not h.s.idle_expired("a")  # stopped
    a = h.req("a")
    assert not h.s.idle_expired("a")  # loading
    h.ok("a")
    assert not h.s.idle_expired("a")  # in flight
    h.s.serve_done(a)
    h.ready("b")  # a evicted
    busy = h.req("b")
    h.req("a")  # queued for b's requests
    h.s.serve_done(busy)
    assert h.s.state("a") == UpstreamState.STARTING
    h.ok("a")
    assert not h.s.idle_expired("a")  # its request is still in flight
    assert h.s.idle_expired("b") is False  # stopped by the eviction


def test_request_during_a_ttl_stop_waits_then_starts_the_model_again() -> None:
    h = Harness(single_group("a"))
    h.ready("a")
    assert h.s.idle_expired("a")
    assert h.s.state("a") == UpstreamState.STOPPING
    rid = h.req("a")
    assert rid in h.s.waiting()
    assert h.load_targets == ["a"]
    h.s.stop_done(["a"])
    assert h.load_targets == ["a", "a"]
    h.ok("a")
    assert rid in h.fx.granted


def test_crash_after_ready_makes_the_next_request_start_the_model() -> None:
    h = Harness(single_group("a"))
    h.ready("a")
    h.s.upstream_stopped("a")
    assert h.s.state("a") == UpstreamState.STOPPED
    h.req("a")
    assert h.load_targets == ["a", "a"]


def test_stopped_notice_for_a_model_being_stopped_is_ignored() -> None:
    h = Harness(single_group("a", "b"))
    h.ready("a")
    h.req("b")  # evicts a
    h.s.upstream_stopped("a")
    assert h.s.state("a") == UpstreamState.STOPPING


def test_a_model_whose_load_completed_takes_its_queued_requests_first() -> None:
    h = Harness(single_group("a", "b"))
    h.req("a")
    h.s.unload(["a"])  # cancels a's load: new requests for a queue behind it
    a2 = h.req("a")
    h.fail("a", errors.model_unloaded("a"))
    h.s.stop_done(["a"])
    assert h.load_targets == ["a", "a"]
    b = h.req("b")
    a3 = h.req("a")  # joins the load under way
    h.ok("a")
    assert set(h.fx.granted) == {a2, a3}
    assert b in h.s.waiting()


def test_matrix_coexisting_models_load_in_parallel_and_serve_fast() -> None:
    h = Harness(matrix_config(["a", "b", "c"], [("s", {"a", "c"}), ("t", {"b"})]))
    h.req("a")
    h.req("c")
    assert h.s.loads() == {"a": frozenset(), "c": frozenset()}
    h.ok("a")
    h.ok("c")
    h.req("a")
    assert len(h.fx.loads) == 2


def test_matrix_incompatible_request_queues_then_evicts() -> None:
    h = Harness(matrix_config(["a", "b", "c"], [("s", {"a", "c"}), ("t", {"b"})]))
    a = h.req("a")
    b = h.req("b")
    assert b in h.s.waiting()
    h.ok("a")
    h.s.serve_done(a)
    assert h.fx.loads[-1] == ("b", frozenset({"a"}))
    assert "set=t" in h.fx.explanations[-1]


def test_decide_names_the_rule_that_applied() -> None:
    h = Harness(single_group("a", "b"))
    assert h.s.decide("a") == (Decision.START, "otherwise")
    h.req("a")
    assert h.s.decide("a")[0] is Decision.JOIN
    assert h.s.decide("b") == (Decision.QUEUE, "an eviction collides with a load/stop")
