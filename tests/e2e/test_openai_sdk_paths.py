"""The real OpenAI SDK with a base URL without ``/v1`` (SPEC 6.1), as llama-server allows."""

from __future__ import annotations

import json

import openai

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port


async def test_an_sdk_whose_base_url_lacks_v1_is_served(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(
        f"""
health_check_timeout = 30
start_port = {free_port()}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""
    )
    client = openai.AsyncOpenAI(base_url=daemon.url, api_key="unused", max_retries=0)
    async with client:
        messages: list[openai.types.chat.ChatCompletionMessageParam] = [
            {"role": "user", "content": "hi"}
        ]
        chat = await client.chat.completions.create(model="a", messages=messages)
        assert (chat.choices[0].message.content or "").startswith("a says token 0")
        stream = await client.chat.completions.create(model="a", messages=messages, stream=True)
        streamed = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(text or "" for text in streamed).startswith("a says token 0")
        completion = await client.completions.create(model="a", prompt="hi")
        assert completion.choices[0].text.startswith("a says token 0")
        embedding = await client.embeddings.create(model="a", input="hi")
        assert embedding.data[0].embedding == [0.1, 0.2, 0.3]
