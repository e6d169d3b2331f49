"""``GET /api/resources`` bodies and the feed snapshot's ``resources`` (SPEC 6.7)."""

from __future__ import annotations

import attrs

from llama_swap_trio.config.memory import SleepConfig, parse_endpoint
from llama_swap_trio.config.model import Config
from llama_swap_trio.http.events import snapshot_message
from llama_swap_trio.routing.api import ModelStatus, RouterSnapshot
from llama_swap_trio.routing.resources import resources_body
from llama_swap_trio.upstream.api import UpstreamState as S

from .builders import group, group_config

GiB = 1024**3


def config(budget: int | None = 24 * GiB) -> Config:
    base = group_config(group("all", "a", "b", "c", "d", swap=False, exclusive=False))
    sleep = SleepConfig(parse_endpoint("POST /sleep"), parse_endpoint("POST /wake_up"))
    models = {
        "a": attrs.evolve(base.models["a"], memory=8 * GiB),
        "b": attrs.evolve(base.models["b"], memory="measured"),
        "c": attrs.evolve(base.models["c"], memory=6 * GiB, sleep=sleep, sleep_memory=GiB),
        "d": base.models["d"],
    }
    return attrs.evolve(base, models=models, gpu_memory=budget)


def snap(states: dict[str, S], measured: dict[str, int] | None = None) -> RouterSnapshot:
    models = tuple(ModelStatus(m, state, 0) for m, state in sorted(states.items()))
    return RouterSnapshot(models=models, queue=(), measured=measured or {})


def test_used_and_free_follow_states_sizes_and_measurements() -> None:
    states = {"a": S.READY, "b": S.READY, "c": S.SLEEPING, "d": S.READY}
    body = resources_body(config(), snap(states, {"b": 5 * GiB}))
    assert body == {
        "gpu_memory": 24 * GiB,
        "used": 8 * GiB + 5 * GiB + 1 * GiB,
        "free": 10 * GiB,
        "models": [
            {"model": "a", "state": "ready", "declared": 8 * GiB, "measured": None},
            {"model": "b", "state": "ready", "declared": None, "measured": 5 * GiB},
            {"model": "c", "state": "sleeping", "declared": 6 * GiB, "measured": None},
            {"model": "d", "state": "ready", "declared": None, "measured": None},
        ],
    }


def test_stopped_models_are_not_listed_and_an_unmeasured_one_is_the_whole_budget() -> None:
    states = {"a": S.STOPPED, "b": S.STARTING, "c": S.STOPPED, "d": S.SHUTDOWN}
    body = resources_body(config(), snap(states))
    assert body["used"] == 24 * GiB
    assert body["free"] == 0
    assert [m["model"] for m in body["models"]] == ["b"]


def test_without_a_budget_gpu_memory_and_free_are_null() -> None:
    body = resources_body(config(budget=None), snap({"a": S.READY}))
    assert (body["gpu_memory"], body["used"], body["free"]) == (None, 8 * GiB, None)


def test_the_feed_snapshot_carries_resources_and_each_models_sizes() -> None:
    states = {"a": S.READY, "b": S.STOPPED, "c": S.STOPPED, "d": S.STOPPED}
    message = snapshot_message(config(), snap(states, {"b": 5 * GiB}))
    resources = message["resources"]
    assert resources["gpu_memory"] == 24 * GiB
    assert resources["used"] == 8 * GiB
    assert resources["sizes"] == {
        "a": [8 * GiB, 0],
        "b": [5 * GiB, 0],
        "c": [6 * GiB, 1 * GiB],
    }


def test_a_config_without_memory_keys_has_no_resources_in_the_snapshot() -> None:
    plain = group_config(group("all", "a"))
    assert "resources" not in snapshot_message(plain, snap({"a": S.READY}))
