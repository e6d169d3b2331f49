"""The demo upstream speaks enough OpenAI for real clients: checked with the openai SDK itself."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from functools import partial

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionMessageParam

from llama_swap_trio.demo_upstream import generate_tokens, serve_demo


async def start_demo(
    nursery: trio.Nursery,
    model_id: str = "demo-chat",
    *,
    tokens_per_second: float = 0.0,
    startup_delay: float = 0.0,
) -> str:
    """Serve ``model_id`` on a free port (unpaced unless asked) and return its base URL."""
    serve = partial(
        serve_demo, 0, model_id, tokens_per_second=tokens_per_second, startup_delay=startup_delay
    )
    port: int = await nursery.start(serve)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def demo_url(nursery: trio.Nursery) -> str:
    """An unpaced demo server for model ``demo-chat``."""
    return await start_demo(nursery)


@pytest.fixture
async def client(demo_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=demo_url + "/v1", api_key="x", max_retries=0) as c:
        yield c


# The openai SDK `break`s out of its own async generators after `data: [DONE]`; trio then warns
# when they are garbage collected. That is the SDK's business, not the server's.
sdk_stream = pytest.mark.filterwarnings(
    "ignore:Async generator .* was garbage collected:ResourceWarning"
)

USER_HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi there, who are you?"}]


async def test_chat_completion_names_the_model_and_reports_usage(
    client: openai.AsyncOpenAI,
) -> None:
    response = await client.chat.completions.create(model="demo-chat", messages=USER_HI)
    content = response.choices[0].message.content
    assert content is not None
    assert "demo-chat" in content
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.completion_tokens == len(content.split())
    assert response.usage.prompt_tokens == 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + len(content.split())


async def test_same_prompt_gets_same_answer(client: openai.AsyncOpenAI) -> None:
    first = await client.chat.completions.create(model="demo-chat", messages=USER_HI)
    second = await client.chat.completions.create(model="demo-chat", messages=USER_HI)
    assert first.choices[0].message.content == second.choices[0].message.content


@sdk_stream
async def test_streamed_chat_completion_ends_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="demo-chat",
        messages=USER_HI,
        stream=True,
        max_tokens=12,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "demo-chat" in text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


@sdk_stream
async def test_stream_with_include_usage_sends_openai_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="demo-chat",
        messages=USER_HI,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == sum(1 for c in chunks[1:-2])


@sdk_stream
async def test_completion_streamed_and_not(client: openai.AsyncOpenAI) -> None:
    whole = await client.completions.create(model="demo-chat", prompt="Once upon", max_tokens=8)
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 8
    assert whole.choices[0].finish_reason == "length"
    stream = await client.completions.create(
        model="demo-chat", prompt="Once upon", max_tokens=8, stream=True
    )
    chunks = [chunk async for chunk in stream]
    streamed = "".join(c.choices[0].text for c in chunks if c.choices).strip()
    assert streamed == whole.choices[0].text
    assert chunks[-1].usage is not None


async def test_embeddings_are_deterministic_unit_vectors(client: openai.AsyncOpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; floats must survive the round trip.
    first = await client.embeddings.create(model="demo-chat", input=["hello", "world"])
    again = await client.embeddings.create(
        model="demo-chat", input="hello", encoding_format="float"
    )
    vectors = [d.embedding for d in first.data]
    assert len(vectors) == 2
    assert len(vectors[0]) == 16
    assert vectors[0] != vectors[1]
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert again.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert first.usage.prompt_tokens == 2


async def test_models_and_health(demo_url: str) -> None:
    async with httpx.AsyncClient(base_url=demo_url) as http:
        health = await http.get("/health")
        models = (await http.get("/v1/models")).json()
    assert (health.status_code, health.text) == (200, "OK")
    assert [m["id"] for m in models["data"]] == ["demo-chat"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", b"{nope", 400, "invalid_json"),
        ("/v1/chat/completions", b"[1]", 400, "invalid_request"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "invalid_request"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "max_tokens": 0}',
            400,
            "invalid_request",
        ),
        ("/v1/completions", b'{"prompt": 5}', 400, "invalid_request"),
        ("/v1/embeddings", b'{"input": []}', 400, "invalid_request"),
        ("/v1/nothing-here", b"{}", 404, "not_found"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(
    demo_url: str, path: str, body: bytes, status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=demo_url) as http:
        response = await http.post(path, content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_sdk_sees_bad_request_as_bad_request_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="demo-chat", messages=[])


@sdk_stream
async def test_streaming_is_paced_at_tokens_per_second(nursery: trio.Nursery) -> None:
    url = await start_demo(nursery, tokens_per_second=40)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as paced:
        began = trio.current_time()
        stream = await paced.chat.completions.create(
            model="demo-chat",
            messages=USER_HI,
            stream=True,
            max_tokens=10,
        )
        arrivals = [trio.current_time() - began async for _ in stream]
    # 10 tokens at 40/s take 0.25 s; allow a loaded CI machine plenty of slack above that.
    assert 0.2 <= arrivals[-1] < 3.0
    assert arrivals[1] < 0.2  # the first token is not held back until the end


async def test_startup_delay_holds_back_listening(nursery: trio.Nursery) -> None:
    began = trio.current_time()
    await start_demo(nursery, startup_delay=0.3)
    assert trio.current_time() - began >= 0.29


async def test_client_leaving_mid_stream_stops_generation(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="llama_swap_trio.demo_upstream")
    url = await start_demo(nursery, tokens_per_second=20)
    async with httpx.AsyncClient(base_url=url) as http:
        with trio.CancelScope() as scope:
            body = {"messages": USER_HI, "stream": True, "max_tokens": 200}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for _ in response.aiter_raw():
                    scope.cancel()
    with trio.fail_after(5):
        while "client disconnected; stopping the stream" not in caplog.text:
            await trio.sleep(0.01)


def test_generated_answer_is_deterministic_and_respects_max_tokens() -> None:
    tokens, finish = generate_tokens("m", "a question", 7)
    assert (len(tokens), finish) == (7, "length")
    assert generate_tokens("m", "a question", 7) == (tokens, finish)
    free, reason = generate_tokens("m", "a question", None)
    assert len(free) >= 30
    assert reason == "stop"
    assert free[-1].rstrip().endswith(".")
    assert generate_tokens("other", "a question", None)[0] != free
