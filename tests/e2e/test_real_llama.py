"""The daemon in front of the real llama.cpp llama-server, driven by the real OpenAI and Anthropic
SDKs. llama-server and the tiny models come from ``scripts/real_llama.py`` (``.ci/run`` builds them
or reuses the cache); without them these tests are skipped with the reason.

The models are random-weight llama GGUFs: the text is gibberish, but everything else (health,
OpenAI and Anthropic endpoints, streaming, usage and timings, slots, props, embeddings) is
llama-server's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.e2e.conftest import Daemon, StartDaemon
from tests.fakes import free_port

pytestmark = pytest.mark.real_llama

ROOT = Path(__file__).resolve().parents[2]


def _built_paths() -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "real_llama.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            "llama-server is not built: run `python scripts/real_llama.py` "
            f"({result.stderr.strip()})"
        )
    return dict(line.split("=", 1) for line in result.stdout.split())


@pytest.fixture
def llama_paths() -> dict[str, str]:
    """The built llama-server and models, or a skip with the reason. A plain fixture: a skip
    raised inside an async (trio) one reaches pytest's summary as a bare ``Skipped``."""
    return _built_paths()


@pytest.fixture
async def llama(start_daemon: StartDaemon, llama_paths: dict[str, str]) -> Daemon:
    """The daemon on config/llama-cpp.toml, the shipped example, with the tiny models."""
    paths = llama_paths
    text = f"start_port = {free_port()}\n" + (ROOT / "config" / "llama-cpp.toml").read_text()
    return await start_daemon(text, env=paths)


async def test_openai_sdk_gets_answers_from_each_model_of_a_swap_group_in_turn(
    llama: Daemon,
) -> None:
    client = openai.AsyncOpenAI(base_url=llama.url + "/v1", api_key="unused", max_retries=0)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Say hello"}
    ]
    seen_groups: dict[str, set[int]] = {}
    async with client:
        for model in ("chat-a", "chat-b", "chat-a"):
            answer = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=8
            )
            # llama-server names its --alias (our model id) in every answer: the right server
            assert answer.model == model
            assert answer.usage is not None
            assert answer.usage.completion_tokens > 0

            stream = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=8, stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert {chunk.model for chunk in chunks} == {model}
            assert any(c.choices and c.choices[0].delta.content for c in chunks)
            seen_groups[model] = llama.note_upstreams()

    async with llama.client() as http:
        running = (await http.get("/running")).json()["running"]
    assert [entry["model"] for entry in running] == ["chat-a"]
    # chat-b's server (the one started second) is gone now that chat-a is back
    b_only = seen_groups["chat-b"] - seen_groups["chat-a"]
    assert b_only
    assert not (llama.live_upstream_groups() & b_only)


async def test_anthropic_sdk_gets_messages_through_the_proxy(llama: Daemon) -> None:
    client = anthropic.AsyncAnthropic(base_url=llama.url, api_key="unused", max_retries=0)
    async with client:
        message = await client.messages.create(
            model="chat-a", max_tokens=8, messages=[{"role": "user", "content": "Hello"}]
        )
        assert message.model == "chat-a"
        assert message.content
        assert message.usage.output_tokens > 0

        async with client.messages.stream(
            model="chat-a", max_tokens=8, messages=[{"role": "user", "content": "Hello"}]
        ) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert texts
        assert final.usage.output_tokens > 0


async def test_embeddings_model_answers_while_the_chat_model_stays_loaded(llama: Daemon) -> None:
    client = openai.AsyncOpenAI(base_url=llama.url + "/v1", api_key="unused", max_retries=0)
    async with client, llama.client() as http:
        await client.chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        embedding = await client.embeddings.create(model="text-embedding-3-small", input="hello")
        assert len(embedding.data[0].embedding) == 64  # n_embd of the tiny model

        running = (await http.get("/running")).json()["running"]
    assert sorted(entry["model"] for entry in running) == ["chat-a", "embed"]


async def test_props_slots_logs_and_the_feed_work_against_the_real_server(llama: Daemon) -> None:
    async with llama.client() as http:
        await http.post("/api/models/load/chat-b")

        props = await http.get("/props", params={"model": "chat-b"})
        assert props.status_code == 200
        assert "default_generation_settings" in props.json()

        slots = await http.get("/upstream/chat-b/slots")
        assert slots.status_code == 200
        assert isinstance(slots.json(), list)

        async with http.stream("GET", "/logs/stream/chat-b") as logs:
            assert logs.status_code == 200
            backlog = b""
            async for chunk in logs.aiter_bytes():
                backlog += chunk
                if b"server is listening" in backlog or b"listening" in backlog:
                    break
        assert b"listening" in backlog

        ws_url = llama.url.replace("http://", "ws://") + "/api/events"
        async with open_websocket_url(ws_url) as ws:
            snapshot = json.loads(await ws.get_message())
            assert snapshot["type"] == "snapshot"
            response = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "chat-b",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            usage = response.json()["usage"]
            with trio.fail_after(10):
                while True:
                    event = json.loads(await ws.get_message())
                    if event["type"] == "request":
                        break
    assert event["model"] == "chat-b"
    assert event["status"] == 200
    assert event["prompt_tokens"] == usage["prompt_tokens"]
    assert event["completion_tokens"] == usage["completion_tokens"]
    assert event["tokens_per_second"] > 0


async def test_loading_state_then_llama_servers_own_stream_in_one_response(
    start_daemon: StartDaemon, llama_paths: dict[str, str]
) -> None:
    paths = llama_paths
    text = (
        f"start_port = {free_port()}\nsend_loading_state = true\n"
        + (ROOT / "config" / "llama-cpp.toml").read_text()
    )
    daemon = await start_daemon(text, env=paths)
    kinds: list[str] = []
    async with daemon.client() as http:
        body = {
            "model": "chat-a",
            "max_tokens": 8,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"]
                    if delta and "reasoning_content" in delta[0]["delta"]:
                        kinds.append("loading")
                    else:
                        kinds.append("model")
    assert kinds[0] == "loading"
    first_model = kinds.index("model")
    assert "loading" not in kinds[first_model:]
    assert kinds.count("model") >= 2
