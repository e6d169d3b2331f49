"""``memory = "measured"`` (SPEC 6.7): readings through a fake NVML, the kept maximum, the file."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.routing.memory import MemorySwapper
from llama_swap_trio.routing.swappers import swapper_for
from llama_swap_trio.upstream import nvml
from llama_swap_trio.upstream.measure import (
    AFTER_READY,
    INTERVAL,
    MeasuredStore,
    Measurer,
    Measuring,
    measurements_path,
)
from llama_swap_trio.upstream.nvml import FakeGpu
from tests.routing.builders import group, group_config

GiB = 1024**3


def measured_config(budget: int = 24 * GiB):  # type: ignore[no-untyped-def]
    config = group_config(group("all", "a", "b", swap=False, exclusive=False))
    models = {
        "a": attrs.evolve(config.models["a"], memory="measured"),
        "b": attrs.evolve(config.models["b"], memory=8 * GiB),
    }
    return attrs.evolve(config, models=models, gpu_memory=budget)


def test_the_file_lives_beside_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / ".config.toml.llama-swap-trio.state.json"
    assert measurements_path(state) == tmp_path / ".config.toml.llama-swap-trio.memory.json"


def test_the_store_keeps_the_maximum_across_restarts_and_forgets_a_changed_command(
    tmp_path: Path,
) -> None:
    config = measured_config()
    path = tmp_path / "m.memory.json"
    store = MeasuredStore(path, config.models)
    assert store.measured("a") is None
    assert store.record("a", 5 * GiB)
    assert not store.record("a", 4 * GiB)  # smaller: the maximum stays
    assert store.record("a", 6 * GiB)
    assert MeasuredStore(path, config.models).measured("a") == 6 * GiB
    changed = {**config.models, "a": attrs.evolve(config.models["a"], cmd="other --ctx 8192")}
    assert MeasuredStore(path, changed).measured("a") is None


def test_an_unreadable_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "m.memory.json"
    path.write_text("{not json")
    assert MeasuredStore(path, measured_config().models).measured("a") is None


def test_until_measured_a_model_counts_as_the_whole_budget(tmp_path: Path) -> None:
    config = measured_config()
    store = MeasuredStore(tmp_path / "m.json", config.models)
    swapper = MemorySwapper(swapper_for(config), config.models, 24 * GiB, store)
    assert swapper.size("a") == 24 * GiB
    assert swapper.evictions("a", frozenset({"b"})) == {"b"}  # runs alone until measured
    store.record("a", 10 * GiB)
    assert swapper.size("a") == 10 * GiB
    assert swapper.evictions("a", frozenset({"b"})) == frozenset()


async def test_the_measurer_reads_the_group_after_ready_and_after_requests(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = measured_config()
    store = MeasuredStore(tmp_path / "m.json", config.models)
    gpu = FakeGpu({100: 3 * GiB, 101: 1 * GiB, 999: 50 * GiB})
    pids: dict[str, int | None] = {"a": 100}
    # the server (100) forked a worker (101); 999 is another user's process
    measurer = Measurer(
        config.models, store, gpu, pids.get, members=lambda pgid: [pgid, pgid + 1], in_thread=False
    )
    bus = EventBus()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(measurer.run, bus)
        await trio.sleep(0.1)
        bus.publish({"type": "model_state", "model": "a", "state": "ready"})
        await trio.sleep(0.1)
        assert store.measured("a") == 4 * GiB
        gpu.usage[100] = 5 * GiB  # the KV cache grew during the first requests
        await trio.sleep(INTERVAL * 2)
        assert store.measured("a") == 6 * GiB
        gpu.usage[100] = 2 * GiB  # it shrank again: the maximum stays
        await trio.sleep(INTERVAL * 2)
        assert store.measured("a") == 6 * GiB
        # the watch ends after AFTER_READY; a request ending starts a new one
        await trio.sleep(AFTER_READY)
        calls = gpu.calls
        await trio.sleep(INTERVAL * 5)
        assert gpu.calls == calls
        gpu.usage[100] = 7 * GiB
        bus.publish({"type": "request", "model": "a", "status": 200})
        await trio.sleep(0.1)
        assert store.measured("a") == 8 * GiB
        # a model that is not "measured" is never read
        bus.publish({"type": "model_state", "model": "b", "state": "ready"})
        await trio.sleep(INTERVAL * 20)
        calls = gpu.calls
        pids["a"] = None
        await trio.sleep(INTERVAL * 3)
        assert gpu.calls == calls
        nursery.cancel_scope.cancel()


async def test_a_failing_driver_is_logged_and_keeps_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = measured_config()
    store = MeasuredStore(tmp_path / "m.json", config.models)
    gpu = FakeGpu({100: GiB})
    gpu.broken = True
    measurer = Measurer(config.models, store, gpu, lambda m: 100, members=lambda p: [p])
    # the real thread hop, with a real FakeGpu call
    assert await measurer.read("a", 100) is None
    assert store.measured("a") is None


async def test_a_reload_that_makes_a_model_measured_starts_measuring_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu = FakeGpu({100: 3 * GiB})
    monkeypatch.setattr(nvml, "system_gpu", lambda: gpu)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    declared = measured_config()
    declared = attrs.evolve(
        declared, models={**declared.models, "a": attrs.evolve(declared.models["a"], memory=GiB)}
    )
    bus = EventBus()
    async with trio.open_nursery() as nursery:
        measuring = Measuring(nursery, str(tmp_path / "config.toml"), lambda m: 100, bus)
        store = measuring.configure(declared.models)
        await trio.testing.wait_all_tasks_blocked()
        assert bus.subscriber_count == 0  # nothing "measured": no measurer at all
        # a reload turns a into "measured": the same store, now with a measurer
        assert measuring.configure(measured_config().models) is store
        await trio.testing.wait_all_tasks_blocked()
        bus.publish({"type": "model_state", "model": "a", "state": "ready"})
        with trio.fail_after(10):
            while store.measured("a") is None:
                await trio.sleep(0.01)
        assert store.measured("a") == 3 * GiB
        # beside the daemon's state file, in the state directory
        [saved] = (tmp_path / "state" / "llama-swap-trio").glob("config.toml-*.memory.json")
        assert MeasuredStore(saved, measured_config().models).measured("a") == 3 * GiB
        nursery.cancel_scope.cancel()
