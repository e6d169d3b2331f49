"""Configuration hot reload end to end: real daemon, real fake upstreams, the config file edited.

Every wait polls a condition inside ``trio.fail_after``. The fake's ``--events`` file records
``start``/``exit`` times (one monotonic clock for all processes) so a test can check that a new
process started only after the old one on the same port had exited.
"""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port

#: generous: the watcher polls every 2 s, and the machine is shared
RELOAD_TIMEOUT = 20.0


def chat(model: str, *, stream: bool = False) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def config_text(port: int, events: Path, models: dict[str, tuple[str, ...]]) -> str:
    """One model per entry (id -> extra fake knobs); every model logs its events to ``events``."""
    lines = [f"health_check_timeout = 30\nstart_port = {port}\n"]
    for model_id, knobs in models.items():
        cmd = fake_cmd("--model-id", model_id, "--events", str(events), *knobs)
        lines.append(f"[models.{model_id}]\ncmd = {json.dumps(cmd)}\n")
    return "\n".join(lines)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = RELOAD_TIMEOUT) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.1)


async def listed(client: httpx.AsyncClient) -> set[str]:
    return {entry["id"] for entry in (await client.get("/v1/models")).json()["data"]}


def read_events(path: Path) -> list[tuple[str, str, int, float]]:
    events = []
    for line in path.read_text().splitlines():
        name, model, pid, at = line.split()
        events.append((name, model, int(pid), float(at)))
    return events


def assert_no_port_shared(path: Path) -> None:
    """Every process started after every earlier process had exited (one port at a time here)."""
    events = read_events(path)
    starts = {pid: at for name, _, pid, at in events if name == "start"}
    exits = {pid: at for name, _, pid, at in events if name == "exit"}
    order = sorted(starts, key=starts.__getitem__)
    for earlier, later in itertools.pairwise(order):
        assert earlier in exits, f"pid {earlier} never exited before pid {later} started"
        assert exits[earlier] < starts[later], f"pid {later} started before pid {earlier} exited"


async def served_by(client: httpx.AsyncClient, model: str) -> dict[str, object]:
    response = await client.post("/v1/chat/completions", json=chat(model))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_watched_file_edit_adds_a_model_and_restarts_a_changed_one_after_the_old_exits(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    # given a daemon watching its config, with model a running
    events = tmp_path / "events"
    port = free_port()
    daemon = await start_daemon(config_text(port, events, {"a": ()}), "--watch-config")
    async with daemon.client() as client:
        await served_by(client, "a")
        daemon.note_upstreams()

        # when the file gains model b and a's command changes (a new knob)
        daemon.config_path.write_text(config_text(port, events, {"a": ("--tokens", "7"), "b": ()}))

        # then b is listed within a few seconds, and a is served by a new process
        async def has_b() -> bool:
            return "b" in await listed(client)

        await wait_until(has_b)
        await daemon.wait_for_line("configuration 2 loaded: kept: -; restarted: a; added: b")
        again = await served_by(client, "a")
        daemon.note_upstreams()
        assert again["served_by"] == "a"
    exits = [pid for name, _, pid, _ in read_events(events) if name == "exit"]
    starts = [pid for name, _, pid, _ in read_events(events) if name == "start"]
    assert len(starts) == 2
    assert len(exits) == 1
    assert_no_port_shared(events)


async def test_invalid_edit_keeps_the_old_config_serving_and_logs_every_problem(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    port = free_port()
    daemon = await start_daemon(config_text(port, events, {"a": ()}), "--watch-config")
    async with daemon.client() as client:
        await served_by(client, "a")

        # when the edit has two problems (the last table is models.a)
        daemon.config_path.write_text(
            "global_ttl = -5\n" + config_text(port, events, {"a": ()}) + 'ttl = "soon"\n'
        )

        # then both are logged, the daemon says it keeps the old config, and a still serves
        await daemon.wait_for_line("configuration not reloaded (2 problem(s)", RELOAD_TIMEOUT)
        assert any("global_ttl" in line for line in daemon.lines)
        assert any("models.a.ttl" in line for line in daemon.lines)
        assert await listed(client) == {"a"}
        assert (await served_by(client, "a"))["served_by"] == "a"
        # the first process was never touched
        assert [name for name, *_ in read_events(events)].count("start") == 1

        # and a later valid edit is still picked up
        daemon.config_path.write_text(config_text(port, events, {"a": (), "c": ()}))

        async def has_c() -> bool:
            return "c" in await listed(client)

        await wait_until(has_c)


async def test_sighup_reloads_without_watch_config(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    port = free_port()
    daemon = await start_daemon(config_text(port, events, {"a": ()}))
    async with daemon.client() as client:
        daemon.config_path.write_text(config_text(port, events, {"a": (), "b": ()}))
        daemon.signal(signal.SIGHUP)

        async def has_b() -> bool:
            return "b" in await listed(client)

        await wait_until(has_b)
        assert (await served_by(client, "b"))["served_by"] == "b"


async def test_stream_in_flight_on_the_old_config_completes_then_the_new_process_starts(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    # given a stream of 15 chunks 0.1 s apart on model a
    events = tmp_path / "events"
    port = free_port()
    slow = ("--tokens", "15", "--token-interval", "0.1")
    daemon = await start_daemon(config_text(port, events, {"a": slow}))
    async with daemon.client() as client:
        await client.post("/api/models/load/a")
        daemon.note_upstreams()
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            lines = r.aiter_lines()
            first = await lines.__anext__()
            assert first.startswith("data: {")

            # when the config is reloaded mid-stream (a's command changed)
            daemon.config_path.write_text(config_text(port, events, {"a": ("--tokens", "3")}))
            daemon.signal(signal.SIGHUP)
            await daemon.wait_for_line("configuration 2 loaded")
            # and a new request for a arrives while the old stream runs
            async with trio.open_nursery() as nursery:
                answer: list[dict[str, object]] = []

                async def ask() -> None:
                    answer.append(await served_by(client, "a"))

                nursery.start_soon(ask)

                # then the old stream completes, all of it
                rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            assert len(rest) >= 15  # 14 more chunks after the first, then [DONE]
        daemon.note_upstreams()
        assert answer[0]["served_by"] == "a"
    # and the new a started only after the old a had exited
    assert [name for name, *_ in read_events(events)].count("start") == 2
    assert_no_port_shared(events)


async def test_sigterm_after_a_reload_exits_0_leaving_no_upstream(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    port = free_port()
    daemon = await start_daemon(config_text(port, events, {"a": ()}), "--watch-config")
    async with daemon.client() as client:
        await served_by(client, "a")
        daemon.note_upstreams()
        daemon.config_path.write_text(config_text(port, events, {"a": (), "b": ()}))
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_line("configuration 2 loaded", RELOAD_TIMEOUT)
        await served_by(client, "b")
        daemon.note_upstreams()
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0
    assert not daemon.live_upstream_groups()
    starts = [pid for name, _, pid, _ in read_events(events) if name == "start"]
    exits = [pid for name, _, pid, _ in read_events(events) if name == "exit"]
    assert sorted(starts) == sorted(exits)


async def test_a_stream_longer_than_the_drain_bound_is_cut_and_the_new_process_starts(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    # given a 30 s stream in flight on model a
    events = tmp_path / "events"
    port = free_port()
    endless = ("--tokens", "300", "--token-interval", "0.1")
    daemon = await start_daemon(config_text(port, events, {"a": endless}))
    async with daemon.client() as client:
        await client.post("/api/models/load/a")
        daemon.note_upstreams()
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            lines = r.aiter_lines()
            assert (await lines.__anext__()).startswith("data: {")

            # when the config is reloaded
            daemon.config_path.write_text(config_text(port, events, {"a": ("--tokens", "3")}))
            reloaded_at = trio.current_time()
            daemon.signal(signal.SIGHUP)

            # then the stream ends after the 5 s drain bound, without its [DONE]
            rest: list[str] = []
            with trio.fail_after(15):
                try:
                    rest = [line async for line in lines if line.startswith("data: ")]
                except httpx.HTTPError:
                    pass  # cut mid-chunk: also an end
            cut_after = trio.current_time() - reloaded_at
        assert "data: [DONE]" not in rest
        assert 4.5 < cut_after < 12
        # and the new process serves a
        assert (await served_by(client, "a"))["served_by"] == "a"
        daemon.note_upstreams()
    assert_no_port_shared(events)


def side_by_side(
    port: int, events: Path, models: dict[str, tuple[str, ...]], extra: str = ""
) -> str:
    """``config_text`` with every model in one group that runs them all at once."""
    ids = ", ".join(json.dumps(m) for m in models)
    return (
        config_text(port, events, models)
        + extra
        + f"\n[routing.groups.all]\nswap = false\nmembers = [{ids}]\n"
    )


async def test_api_reload_restarts_a_changed_cmd_and_keeps_a_model_whose_description_changed(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    # given a and b running side by side, each streaming 20 chunks 0.1 s apart
    events = tmp_path / "events"
    port = free_port()
    slow = ("--tokens", "20", "--token-interval", "0.1")
    daemon = await start_daemon(side_by_side(port, events, {"a": slow, "b": slow}))
    async with daemon.client() as client:
        pids = {m: (await served_by(client, m))["pid"] for m in ("a", "b")}
        daemon.note_upstreams()
        ends: dict[str, list[str]] = {}
        async with trio.open_nursery() as nursery:

            async def stream(model: str, started: trio.Event) -> None:
                async with client.stream(
                    "POST", "/v1/chat/completions", json=chat(model, stream=True)
                ) as r:
                    lines = r.aiter_lines()
                    ends[model] = [await lines.__anext__()]
                    started.set()
                    try:
                        ends[model] += [line async for line in lines if line.startswith("data:")]
                    except httpx.HTTPError:
                        ends[model].append("cut")

            for model in ("a", "b"):
                started = trio.Event()
                nursery.start_soon(stream, model, started)
                await started.wait()

            # when a's cmd and b's description change, and the reload is asked for by API
            daemon.config_path.write_text(
                side_by_side(
                    port, events, {"a": (*slow, "--tokens", "21"), "b": slow}, 'description = "B"\n'
                )
            )
            answer = await client.post("/api/config/reload")
        # then the answer says so, and b's stream completed on its process
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "type": "reload",
            "ok": True,
            "kept": ["b"],
            "restarted": ["a"],
            "added": [],
            "removed": [],
        }
        assert ends["b"][-1] == "data: [DONE]"
        assert len(ends["b"]) >= 21
        # a's old stream (2 s long) finished within the 5 s drain as well
        assert ends["a"][-1] == "data: [DONE]"
        again = {m: (await served_by(client, m))["pid"] for m in ("a", "b")}
        daemon.note_upstreams()
        assert again["b"] == pids["b"]
        assert again["a"] != pids["a"]
        listed_b = [e for e in (await client.get("/v1/models")).json()["data"] if e["id"] == "b"]
        assert listed_b[0]["description"] == "B"
    starts = [pid for name, model, pid, _ in read_events(events) if name == "start"]
    assert len(starts) == 3  # a, b, and a again


async def test_api_reload_stops_a_removed_model_and_refuses_it_from_then_on(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    port = free_port()
    daemon = await start_daemon(side_by_side(port, events, {"a": (), "b": ()}))
    async with daemon.client() as client:
        pid_b = (await served_by(client, "b"))["pid"]
        pid_a = (await served_by(client, "a"))["pid"]
        daemon.note_upstreams()

        daemon.config_path.write_text(side_by_side(port, events, {"a": ()}))
        answer = await client.post("/api/config/reload")

        assert answer.status_code == 200, answer.text
        assert answer.json()["removed"] == ["b"]
        assert answer.json()["kept"] == ["a"]

        async def b_exited() -> bool:
            return any(n == "exit" and p == pid_b for n, _, p, _ in read_events(events))

        await wait_until(b_exited)
        assert await listed(client) == {"a"}
        refused = await client.post("/v1/chat/completions", json=chat("b"))
        assert refused.status_code == 404
        assert (await served_by(client, "a"))["pid"] == pid_a


async def test_api_reload_of_an_invalid_file_answers_400_and_keeps_the_old_config(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    port = free_port()
    daemon = await start_daemon(config_text(port, events, {"a": ()}))
    async with daemon.client() as client:
        pid_a = (await served_by(client, "a"))["pid"]
        daemon.note_upstreams()

        daemon.config_path.write_text(config_text(port, events, {"a": ()}) + "tll = 5\n")
        answer = await client.post("/api/config/reload")

        assert answer.status_code == 400
        body = answer.json()
        assert body["type"] == "reload"
        assert body["ok"] is False
        assert any("models.a.tll" in line for line in body["errors"])
        assert (await served_by(client, "a"))["pid"] == pid_a
        assert await listed(client) == {"a"}
