"""Shared helpers for the watch tests: a settable clock and the recorded feed session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llama_swap_trio.watch.state import WatchState

SESSION = Path(__file__).with_name("session.jsonl")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def recorded_session() -> list[dict[str, Any]]:
    """A feed session recorded as JSON lines: snapshot, a request, a swap qwen -> llama, ..."""
    return [json.loads(line) for line in SESSION.read_text().splitlines() if line.strip()]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> WatchState:
    return WatchState(clock=clock)
