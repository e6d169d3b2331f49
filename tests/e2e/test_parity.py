"""llama-swap parity end to end (SPEC 6.6): peers, profiles and selectors on a real daemon.

The peer is a real fake-upstream process on its own port (it echoes the headers and body it got);
local models are fake upstreams the daemon starts.
"""

from __future__ import annotations

import json
import signal
import time

import httpx
import trio

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port, running_fake


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def peer_config(peer_url: str, down_port: int) -> str:
    return f"""
health_check_timeout = 30
start_port = {free_port()}

[models.local]
cmd = {json.dumps(fake_cmd("--model-id", "local"))}

[peers.box]
proxy = "{peer_url}"
api_key = "${{env.PEER_KEY}}"
models = ["m1", "org/m2"]
filters = {{ strip_params = "temperature, top_p", set_params = {{ provider = {{ zdr = true }} }} }}

[peers.down]
proxy = "http://127.0.0.1:{down_port}"
models = ["gone"]
timeouts = {{ connect = 2 }}
"""


async def test_peer_models_are_reached_qualified_and_bare_with_the_peer_key(
    start_daemon: StartDaemon,
) -> None:
    async with running_fake("--model-id", "remote") as peer:
        down = free_port()
        daemon = await start_daemon(peer_config(peer.url, down), env={"PEER_KEY": "sekrit"})
        headers = {"authorization": "Bearer client-key", "x-api-key": "client-key"}
        async with daemon.client(headers=headers) as client:
            for name, sent_as in (("box/m1", "m1"), ("m1", "m1"), ("box/org/m2", "org/m2")):
                answer = await client.post("/v1/chat/completions", json=chat(name, temperature=1))
                assert answer.status_code == 200, answer.text
                echo = answer.json()
                assert echo["served_by"] == "remote"
                assert echo["body"]["model"] == sent_as  # the peer's own name for it
                assert "temperature" not in echo["body"]  # the peer's strip_params
                assert echo["body"]["provider"] == {"zdr": True}  # and set_params
                # the peer's key replaced the client's, in both headers
                assert echo["headers"]["authorization"] == "Bearer sekrit"
                assert echo["headers"]["x-api-key"] == "sekrit"

            # streaming goes through the same relay, and the feed reports it with its usage
            async with client.stream("GET", "/api/events") as feed:
                lines = feed.aiter_lines()
                assert (await anext(lines)).startswith("data: {")  # the snapshot
                async with client.stream(
                    "POST", "/v1/chat/completions", json=chat("box/m1", stream=True)
                ) as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    text = (await stream.aread()).decode()
                assert "remote says token 0" in text
                assert text.rstrip().endswith("data: [DONE]")
                with trio.fail_after(15):
                    async for line in lines:
                        event = json.loads(line[6:]) if line.startswith("data: ") else {}
                        if event.get("type") == "request":
                            break
                assert event["model"] == "box/m1"
                assert event["status"] == 200
                assert event["completion_tokens"] == 5
                # a peer is never queued or loaded: its wait ends before the first byte
                assert event["load_ms"] == 0
                assert event["queue_ms"] < event["ttfb_ms"]

            listed = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
            assert listed["box/m1"]["owned_by"] == "box"
            assert listed["box/org/m2"]["owned_by"] == "box"
            assert listed["down/gone"]["owned_by"] == "down"
            assert "m1" not in listed  # peers are listed qualified only
            assert listed["local"]["owned_by"] == "llama-swap-trio"

            # a peer that is down: a fast 502 naming it; local models are not held up
            started = time.monotonic()
            failed = await client.post("/v1/chat/completions", json=chat("gone"))
            assert failed.status_code == 502
            assert failed.json()["error"]["code"] == "upstream_error"
            assert "peer 'down'" in failed.json()["error"]["message"]
            assert time.monotonic() - started < 2
            local = await client.post("/v1/chat/completions", json=chat("local"))
            assert local.status_code == 200
            # a peer model is never started: nothing about it is running
            running = (await client.get("/running")).json()["running"]
            assert [r["model"] for r in running] == ["local"]


def parity_config() -> str:
    """Models a, b (may run together), c (alone); a profile; one selector per strategy."""
    slow = fake_cmd("--model-id", "${MODEL_ID}", "--startup-delay", "0.3")
    return f"""
health_check_timeout = 30
start_port = {free_port()}

[models.a]
cmd = {json.dumps(slow)}
aliases = ["chat"]
[models.b]
cmd = {json.dumps(slow)}
[models.c]
cmd = {json.dumps(slow)}

[routing.groups.pair]
members = ["a", "b"]
swap = false
exclusive = true

[profiles.bee]
description = "send chat to b"
pins = {{ chat = "b", c = "" }}

[selectors.warm-ab]
strategy = "warm"
targets = ["a", "b"]
name = "Warm pick"

[selectors.pin-ba]
strategy = "pin"
targets = ["b", "a"]

[selectors.spill-ab]
strategy = "spillover"
targets = ["a", "b"]
spillover = 1
metadata = {{ purpose = "test" }}
"""


async def served_by(client: httpx.AsyncClient, model: str) -> str:
    answer = await client.post("/v1/chat/completions", json=chat(model))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["served_by"])


async def test_a_profile_switched_at_run_time_changes_which_model_answers(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(parity_config())
    async with daemon.client() as client:
        assert (await client.get("/api/profiles")).json() == {
            "active": None,
            "profiles": [
                {"name": "bee", "description": "send chat to b", "pins": {"chat": "b", "c": ""}}
            ],
        }
        assert await served_by(client, "chat") == "a"

        activated = await client.post("/api/profiles/bee")
        assert activated.json() == {"msg": "ok", "active": "bee"}
        assert await served_by(client, "chat") == "b"
        hidden = await client.post("/v1/chat/completions", json=chat("c"))
        assert hidden.status_code == 404  # pinned to ""
        assert hidden.json()["error"]["code"] == "model_not_found"
        assert (await client.get("/api/profiles")).json()["active"] == "bee"

        assert (await client.delete("/api/profiles/active")).json()["active"] is None
        assert await served_by(client, "chat") == "a"
        assert (await client.post("/api/profiles/nope")).status_code == 404

        # a reload starts with no active profile
        await client.post("/api/profiles/bee")
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_line("configuration 2 loaded", 30)
        assert (await client.get("/api/profiles")).json()["active"] is None
        assert await served_by(client, "chat") == "a"


async def test_selectors_pick_by_strategy_with_real_processes(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(parity_config())
    async with daemon.client() as client:
        listed = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
        assert listed["warm-ab"]["name"] == "Warm pick"
        assert listed["warm-ab"]["meta"]["selector"] == {"strategy": "warm", "targets": ["a", "b"]}
        assert listed["spill-ab"]["meta"] == {
            "purpose": "test",
            "selector": {"strategy": "spillover", "targets": ["a", "b"], "spillover": 1},
        }
        assert listed["pin-ba"]["status"]["value"] == "unloaded"

        # pin: always the first target
        assert await served_by(client, "pin-ba") == "b"
        listed = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
        assert listed["pin-ba"]["status"]["value"] == "loaded"  # its first target runs
        # warm: b is the one running, so b answers although a comes first
        assert await served_by(client, "warm-ab") == "b"
        await client.post("/api/models/unload")
        # warm with nothing running: the first target, started cold
        assert await served_by(client, "warm-ab") == "a"

        # spillover: a has one request in flight (spillover = 1), so the next starts b
        await client.post("/api/models/unload")
        held = trio.Event()
        results: dict[str, str] = {}

        async def long_request() -> None:
            body = chat("spill-ab", stream=True, x_tokens=40, x_token_interval=0.05)
            async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: {") and not held.is_set():
                        results["first"] = json.loads(line[6:])["model"]
                        held.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_request)
            with trio.fail_after(20):
                await held.wait()
            results["second"] = await served_by(client, "spill-ab")
        assert results["first"] == "a"  # the body's model is the chosen target
        assert results["second"] == "b"
        running = {r["model"] for r in (await client.get("/running")).json()["running"]}
        assert running == {"a", "b"}
        # with nothing in flight any more, the first target takes requests again
        assert await served_by(client, "spill-ab") == "a"


async def test_peer_streams_are_cut_when_the_client_leaves_and_head_timeouts_name_the_peer(
    start_daemon: StartDaemon,
) -> None:
    async with (
        running_fake("--model-id", "remote", "--tokens", "100", "--token-interval", "0.1") as peer,
        running_fake("--model-id", "mute", "--no-response-head") as mute,
    ):
        daemon = await start_daemon(
            f"""
[peers.box]
proxy = "{peer.url}"
models = ["m1"]
[peers.mute]
proxy = "{mute.url}"
models = ["m2"]
timeouts = {{ response_header = 1 }}
"""
        )
        async with daemon.client() as client, httpx.AsyncClient(trust_env=False) as direct:
            body = chat("box/m1", stream=True)
            async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: {"):
                        break
            # leaving the block closed the connection mid-stream: the peer sees it
            with trio.fail_after(10):
                while (await direct.get(f"{peer.url}/debug/stats")).json()["disconnects"] < 1:
                    await trio.sleep(0.05)

            started = time.monotonic()
            late = await client.post("/v1/chat/completions", json=chat("m2"))
            assert late.status_code == 504
            assert late.json()["error"]["code"] == "gateway_timeout"
            assert "peer 'mute'" in late.json()["error"]["message"]
            assert time.monotonic() - started < 5
