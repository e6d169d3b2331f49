"""The daemon end to end: real daemon process, real fake upstream processes, real sockets."""

from __future__ import annotations

import json
import signal
from contextlib import aclosing

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port


def chat(model: str, *, stream: bool = False, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        **extra,
    }


def two_models(*knobs_a: str, extra: str = "") -> str:
    return f"""
health_check_timeout = 30
start_port = {free_port()}
{extra}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a", *knobs_a))}
[models.b]
cmd = {json.dumps(fake_cmd("--model-id", "b"))}
"""


async def first_data_line(response: httpx.Response) -> str:
    """Read a streaming response up to its first SSE data line (the rest stays unread)."""
    async with aclosing(response.aiter_lines()) as lines:
        async for line in lines:
            if line.startswith("data: {"):
                return line
    raise AssertionError("the stream ended without a data line")


async def running_models(client: httpx.AsyncClient) -> dict[str, str]:
    body = (await client.get("/running")).json()
    return {entry["model"]: entry["state"] for entry in body["running"]}


async def test_one_model_runs_at_a_time_by_default(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(two_models())
    async with daemon.client() as client:
        first = await client.post("/v1/chat/completions", json=chat("a"))
        assert first.status_code == 200
        assert first.json()["served_by"] == "a"
        groups_with_a = daemon.note_upstreams()

        second = await client.post("/v1/chat/completions", json=chat("b"))

        assert second.status_code == 200, second.text
        assert second.json()["served_by"] == "b"
        assert await running_models(client) == {"b": "ready"}
    # a's process group is gone once b answered
    a_group = groups_with_a - daemon.note_upstreams()
    assert a_group
    assert not daemon.live_upstream_groups() & a_group


async def test_a_group_that_does_not_swap_keeps_its_members_together(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        two_models(extra="")
        + """
[routing.groups.pair]
swap = false
members = ["a", "b"]
"""
    )
    async with daemon.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 200
        assert await running_models(client) == {"a": "ready", "b": "ready"}


async def test_first_stream_chunk_arrives_while_upstream_still_produces(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(two_models("--tokens", "4", "--token-interval", "1.0"))
    async with daemon.client() as client:
        await client.post("/api/models/load/a")
        started = trio.current_time()
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-accel-buffering"] == "no"
            await first_data_line(r)
            first_chunk_after = trio.current_time() - started
    # the whole stream takes ~3 s; the first chunk comes long before that
    assert first_chunk_after < 2.0


async def test_client_disconnect_mid_stream_reaches_the_upstream(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(two_models("--tokens", "100", "--token-interval", "0.1"))
    async with daemon.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            await first_data_line(r)
        # leaving the block closed the connection mid-stream: the upstream sees it within 1 s
        with trio.fail_after(1.0):
            while (await client.get("/upstream/a/debug/stats")).json()["disconnects"] < 1:
                await trio.sleep(0.02)


async def test_long_stream_is_not_cut_when_another_model_is_requested(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(two_models("--tokens", "10", "--token-interval", "0.1"))
    async with daemon.client() as client:
        await client.post("/api/models/load/a")
        chunks: list[str] = []
        b_answer: list[httpx.Response] = []
        stream_done_at: list[float] = []
        b_done_at: list[float] = []

        async def stream_a() -> None:
            body = chat("a", stream=True)
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        chunks.append(line)
            stream_done_at.append(trio.current_time())

        async def ask_b() -> None:
            b_answer.append(await client.post("/v1/chat/completions", json=chat("b")))
            b_done_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_a)
            with trio.fail_after(5):
                while not chunks:
                    await trio.sleep(0.01)
            nursery.start_soon(ask_b)

        assert len(chunks) == 10
        assert b_answer[0].json()["served_by"] == "b"
        assert b_done_at[0] >= stream_done_at[0]


async def test_upstream_that_exits_at_startup_gives_502_long_before_the_health_timeout(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(two_models("--exit-at-startup", "3"))
    async with daemon.client() as client:
        started = trio.current_time()
        response = await client.post("/v1/chat/completions", json=chat("a"))
        elapsed = trio.current_time() - started

    assert response.status_code == 502
    error = response.json()
    assert error["src"] == "llama-swap-trio"
    assert error["error"]["code"] == "upstream_error"
    assert "fatal: cannot load model" in error["error"]["message"]
    assert elapsed < 10  # health_check_timeout is 30


async def test_model_ids_with_slashes_are_reachable_under_upstream(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        f"""
start_port = {free_port()}
[models."org/model"]
cmd = {json.dumps(fake_cmd("--model-id", "org/model"))}
[models.org]
cmd = {json.dumps(fake_cmd("--model-id", "org"))}
"""
    )
    async with daemon.client() as client:
        response = await client.get("/upstream/org/model/some/path%2Fkept?x=1")
        assert response.status_code == 200
        echo = response.json()
        assert echo["served_by"] == "org/model"
        assert echo["path"] == "/some/path%2Fkept"

        redirect = await client.get("/upstream/org/model?x=1")
        assert redirect.status_code == 301
        assert redirect.headers["location"].endswith("/upstream/org/model/?x=1")

        ws_url = daemon.url.replace("http://", "ws://") + "/upstream/org/model/ws"
        async with open_websocket_url(ws_url) as ws:
            await ws.send_message("ping through the proxy")
            assert await ws.get_message() == "ping through the proxy"


async def test_api_keys_are_required_in_each_accepted_form(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(two_models(extra='api_keys = ["sekret"]'))
    async with daemon.client() as client:
        assert (await client.get("/health")).status_code == 200
        missing = await client.get("/v1/models")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Basic realm="llama-swap-trio"'
        assert (await client.get("/v1/models", headers={"x-api-key": "wrong"})).status_code == 401
        ok_forms = [
            {"headers": {"authorization": "Bearer sekret"}},
            {"headers": {"x-api-key": "sekret"}},
            {"auth": ("anyone", "sekret")},
            {"params": {"api_key": "sekret"}},
        ]
        for form in ok_forms:
            response = await client.get("/v1/models", **form)  # type: ignore[arg-type]
            assert response.status_code == 200, form


async def test_loading_state_streams_progress_before_the_models_answer(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        two_models("--startup-delay", "1.5", extra="send_loading_state = true")
    )
    async with daemon.client() as client:
        kinds: list[str] = []
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                kinds.append("loading" if "reasoning_content" in delta else "model")
    assert kinds[0] == "loading"
    assert "model" in kinds
    assert kinds.index("model") > kinds.index("loading")
    assert "loading" not in kinds[kinds.index("model") :]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_ctrl_c_or_sigterm_with_running_models_and_an_open_stream_exits_0_leaving_nothing(
    start_daemon: StartDaemon, signum: signal.Signals
) -> None:
    daemon = await start_daemon(
        two_models("--tokens", "20", "--token-interval", "0.1")
        + '\n[routing.groups.all]\nswap = false\nmembers = ["a", "b"]\n'
    )
    async with daemon.client() as client:
        await client.post("/api/models/load/a")
        await client.post("/api/models/load/b")
        assert await running_models(client) == {"a": "ready", "b": "ready"}
        groups = daemon.note_upstreams()
        assert len(groups) >= 2
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            lines = r.aiter_lines()  # kept open: the stream stays in flight
            while not (await lines.__anext__()).startswith("data: {"):
                pass
            daemon.signal(signum)
            # the wait for the stream is announced at once, not after it
            await daemon.wait_for_line("waiting up to 5 s for 1 in-flight responses", 3)
    assert await daemon.wait_exit() == 0
    assert not daemon.live_upstream_groups()
