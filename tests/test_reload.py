"""Reload triggers and the reload itself, in process: the file poller, the Reloader's decisions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from llama_swap_trio.config import load_config_text
from llama_swap_trio.config.model import Config
from llama_swap_trio.feed.bus import EventBus, Subscription
from llama_swap_trio.generation import Dispatcher, Generation, Runtime, Shared
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.reload import ChangeDetector, Reloader, StatKey, stat_key, watch_config_file

ONE_MODEL = 'start_port = 45000\n[models.a]\ncmd = "true --port ${PORT}"\n'
TWO_MODELS = ONE_MODEL + '[models.b]\ncmd = "true --port ${PORT}"\n'


# -- the change detector (pure) --------------------------------------------------------------------


def test_the_baseline_never_fires_and_an_unchanged_file_stays_quiet() -> None:
    detector = ChangeDetector((1, 10, 7))
    assert not detector.poll((1, 10, 7))
    assert not detector.poll((1, 10, 7))


@pytest.mark.parametrize(
    "changed", [(2, 10, 7), (1, 11, 7), (1, 10, 8)], ids=["mtime", "size", "inode"]
)
def test_a_change_of_mtime_size_or_inode_fires_once(changed: StatKey) -> None:
    detector = ChangeDetector((1, 10, 7))
    assert detector.poll(changed)
    assert not detector.poll(changed)


def test_a_missing_file_is_quiet_and_fires_when_it_reappears_even_unchanged() -> None:
    detector = ChangeDetector((1, 10, 7))
    assert not detector.poll(None)
    assert not detector.poll(None)
    assert detector.poll((1, 10, 7))  # a symlink swap can bring back the very same file


def test_stat_key_follows_symlinks_and_is_none_for_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "real.toml"
    target.write_text("x")
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    assert stat_key(str(link)) == stat_key(str(target))
    assert stat_key(str(tmp_path / "nope.toml")) is None


async def test_the_poller_fires_on_a_change_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # given a file whose stat changes at t=5 (poll interval 2 s)
    fired: list[float] = []

    def fake_stat(path: str) -> StatKey:
        return (1, 1, 1) if trio.current_time() < 5 else (2, 1, 1)

    with trio.move_on_after(9):
        await watch_config_file(
            "config.toml", lambda: fired.append(trio.current_time()), stat=fake_stat
        )
    # then it fired once, at the first poll after the change
    assert fired == [6.0]


# -- the Reloader, with real generations that start no process ------------------------------------


def make_shared() -> Shared:
    return Shared(EventBus(), None, LogBuffer(), LogBuffer(), {}, lambda: False)


class Rig:
    def __init__(self, path: Path, nursery: trio.Nursery) -> None:
        self.path = path
        self.shared = make_shared()
        self.dispatcher = Dispatcher()
        self.applied: list[Config] = []
        self.numbers = iter(range(1, 100))
        self.nursery = nursery
        self.runtime = Runtime(load_config_text(path.read_text(), str(path)), self.shared)

    def new_generation(self, config: Config) -> Generation:
        return Generation(next(self.numbers), config, self.runtime, self.shared)

    async def start(self) -> Generation:
        await self.nursery.start(self.runtime.run)
        self.reloader = Reloader(
            str(self.path),
            dispatcher=self.dispatcher,
            runtime=self.runtime,
            nursery=self.nursery,
            bus=self.shared.bus,
            new_generation=self.new_generation,
            apply_logging=self.applied.append,
            shutting_down=lambda: False,
        )
        first = self.new_generation(self.runtime.config)
        self.dispatcher.current = first
        return first


async def wait_until_switched(dispatcher: Dispatcher, old: Generation) -> Generation:
    with trio.fail_after(10):
        while dispatcher.current is old:
            await trio.sleep(0.01)
    assert dispatcher.current is not None
    return dispatcher.current


def events(feed: Subscription) -> list[dict[str, object]]:
    out = []
    while (event := feed.get_nowait()) is not None:
        out.append(dict(event))
    return out


async def test_a_valid_reload_switches_and_publishes_a_snapshot_and_the_reload_event(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(TWO_MODELS)
    rig = Rig(path, nursery)
    first = await rig.start()
    feed = rig.shared.bus.subscribe(100)

    # when b's description changes, a's command changes and c is added
    path.write_text(
        'start_port = 45000\n[models.a]\ncmd = "false --port ${PORT}"\n'
        '[models.b]\ncmd = "true --port ${PORT}"\ndescription = "new"\n'
        '[models.c]\ncmd = "true --port ${PORT}"\n'
    )
    outcome = await rig.reloader.reload("test")
    new = rig.dispatcher.current
    assert new is not first
    assert new is not None

    expected = {
        "type": "reload",
        "ok": True,
        "kept": ["b"],
        "restarted": ["a"],
        "added": ["c"],
        "removed": [],
    }
    assert outcome == expected
    assert sorted(new.config.models) == ["a", "b", "c"]
    # b keeps its port; a and c are numbered as at startup, skipping it
    assert new.config.models["b"].port == 45001
    assert new.config.models["a"].port == 45000
    assert new.config.models["c"].port == 45002
    assert [sorted(c.models) for c in rig.applied] == [["a", "b", "c"]]
    published = events(feed)
    assert [e["type"] for e in published] == ["snapshot", "reload"]
    assert published[1] == expected


async def test_an_invalid_file_is_reported_and_the_old_generation_keeps_serving(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(ONE_MODEL)
    rig = Rig(path, nursery)
    first = await rig.start()
    feed = rig.shared.bus.subscribe(100)

    path.write_text("global_ttl = -1\n" + ONE_MODEL + "nonsense = 1\n")  # the last table: a
    with caplog.at_level(logging.WARNING, logger="llama_swap_trio"):
        outcome = await rig.reloader.reload("test")

    messages = [r.getMessage() for r in caplog.records]
    assert any("global_ttl" in m for m in messages)
    assert any("nonsense" in m for m in messages)
    assert "configuration not reloaded (2 problem(s) above)" in messages[-1]
    assert outcome["ok"] is False
    errors = outcome["errors"]
    assert isinstance(errors, list)
    assert len(errors) == 2
    assert events(feed) == [outcome]
    assert rig.dispatcher.current is first
    assert rig.applied == []


async def test_a_reload_triggered_while_one_is_under_way_is_dropped(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(ONE_MODEL)
    rig = Rig(path, nursery)
    first = await rig.start()

    path.write_text(TWO_MODELS)
    with caplog.at_level(logging.INFO, logger="llama_swap_trio"):
        rig.reloader.trigger("first")
        rig.reloader.trigger("second")
        second = await wait_until_switched(rig.dispatcher, first)
        await trio.testing.wait_all_tasks_blocked()

    assert any("second: reload dropped" in r.getMessage() for r in caplog.records)
    assert second.number == 2  # only one new generation was built
    assert sum("reloading" in r.getMessage() for r in caplog.records) == 1
