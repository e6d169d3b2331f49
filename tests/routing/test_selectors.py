"""Selector strategies (SPEC 6.6) as pure functions of the targets' states and counts."""

from __future__ import annotations

import pytest

from llama_swap_trio.config.parity_model import SelectorConfig, Strategy
from llama_swap_trio.routing.selectors import TargetView, choose


def selector(strategy: Strategy, spillover: int = 1) -> SelectorConfig:
    return SelectorConfig("s", strategy, ("a", "b", "c"), spillover=spillover)


def views(*specs: tuple[str | None, int]) -> list[TargetView]:
    return [TargetView(key, state, n) for key, (state, n) in zip("abc", specs, strict=True)]


def picked(strategy: Strategy, *specs: tuple[str | None, int], spillover: int = 1) -> str | None:
    found = choose(selector(strategy, spillover), views(*specs))
    return None if found is None else found.key


def test_pin_always_takes_the_first_target() -> None:
    assert picked("pin", ("stopped", 0), ("ready", 0), ("ready", 0)) == "a"
    assert picked("pin", ("stopping", 5), ("ready", 0), ("ready", 0)) == "a"


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (("stopped", "ready", "ready"), "b"),  # the first ready one
        (("starting", "stopped", "ready"), "c"),  # ready beats starting
        (("stopped", "starting", "stopped"), "b"),  # else the first starting one
        (("stopped", "stopped", "stopped"), "a"),  # else the first, started cold
    ],
)
def test_warm_prefers_a_target_already_running(states: tuple[str, ...], expected: str) -> None:
    assert picked("warm", *((s, 0) for s in states)) == expected


def test_spillover_fills_the_first_target_then_starts_the_next() -> None:
    # nothing running: the first target, cold
    assert picked("spillover", ("stopped", 0), ("stopped", 0), ("stopped", 0), spillover=2) == "a"
    # a has room left
    assert picked("spillover", ("ready", 1), ("stopped", 0), ("stopped", 0), spillover=2) == "a"
    # a is full: b starts
    assert picked("spillover", ("ready", 2), ("stopped", 0), ("stopped", 0), spillover=2) == "b"
    # b is up and has room: b, and c stays stopped
    assert picked("spillover", ("ready", 2), ("starting", 1), ("stopped", 0), spillover=2) == "b"
    # both full: c starts
    assert picked("spillover", ("ready", 2), ("ready", 2), ("stopped", 0), spillover=2) == "c"
    # all full and nothing cold: the least busy active one
    assert picked("spillover", ("ready", 3), ("ready", 2), ("ready", 4), spillover=2) == "b"


def test_spillover_skips_targets_that_are_stopping_and_counts_peers_by_requests() -> None:
    assert picked("spillover", ("stopping", 0), ("stopped", 0), ("stopped", 0)) == "b"
    # a peer (state None) with a request in flight is active and full; the next is used
    assert picked("spillover", (None, 1), ("stopped", 0), ("stopped", 0)) == "b"
    assert picked("spillover", (None, 0), ("stopped", 0), ("stopped", 0)) == "a"
    # every target going away: nothing to pick (the app answers 503)
    assert picked("spillover", ("stopping", 0), ("shutdown", 0), ("stopping", 0)) is None


def test_spillover_ties_among_full_targets_go_round_robin() -> None:
    sel = selector("spillover")
    targets = views(("ready", 1), ("ready", 1), ("ready", 1))
    keys = [found.key for turn in range(3) if (found := choose(sel, targets, turn)) is not None]
    assert keys == ["a", "b", "c"]
