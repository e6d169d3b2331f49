"""The loading-state stream: progress chunks, then the model's own stream, in one response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import httpx
import pytest
import trio

from llama_swap_trio import errors
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http import loading
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.errors import send_error
from llama_swap_trio.http.forward import ForwardResult
from llama_swap_trio.http.loading import serve_with_loading_state
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.routing.api import Grant, Progress, ProgressCallback

from .forward_support import App, Recorder, grant_for, read_body, start_server, upstream_app


@attrs.define
class FakeRouter:
    """serve() reports progress, then waits for ``release`` (or fails with ``error``)."""

    grant: Grant
    release: trio.Event = attrs.field(factory=trio.Event)
    error: ProxyError | None = None
    cancelled: trio.Event = attrs.field(factory=trio.Event)
    served: int = 0
    #: raised at once, before any progress (as the router refuses at admission)
    refusal: ProxyError | None = None

    @asynccontextmanager
    async def serve(
        self,
        model_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        require_ready: bool = False,
    ) -> AsyncIterator[Grant]:
        assert on_progress is not None
        if self.refusal is not None:
            raise self.refusal
        try:
            on_progress(Progress("queued", position=2))
            on_progress(Progress("loading", evict=("other-model",)))
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        if self.error is not None:
            raise self.error
        on_progress(Progress("ready", load_seconds=1.25))
        self.served += 1
        yield self.grant


@attrs.define
class Harness:
    router: FakeRouter
    client: httpx.AsyncClient
    results: list[ForwardResult]


def loading_app(router: FakeRouter, pool: ClientPool, results: list[ForwardResult]) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        result = await serve_with_loading_state(
            scope,
            receive,
            send,
            router=router,  # type: ignore[arg-type]
            model=router.grant.model,
            requested_name="alias-of-m1",
            body=body,
            pool=pool,
        )
        results.append(result)

    async def app_answering_refusals(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except ProxyError as error:  # what the daemon's app does with a refusal
            await send_error(scope, send, error)

    return app_answering_refusals


@pytest.fixture
async def harness(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(loading, "TICK", 0.1)
    upstream_url = await start_server(nursery, upstream_app(Recorder()))
    pool = ClientPool()
    router = FakeRouter(grant_for(upstream_url))
    results: list[ForwardResult] = []
    proxy_url = await start_server(nursery, loading_app(router, pool, results))
    async with httpx.AsyncClient(base_url=proxy_url, trust_env=False) as client:
        yield Harness(router, client, results)
    await pool.aclose()


def events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


async def test_progress_chunks_precede_the_models_stream_in_one_200(harness: Harness) -> None:
    body = {"model": "alias-of-m1", "stream": True, "messages": []}
    async with harness.client.stream("POST", "/v1/chat/completions", json=body) as response:
        # given the head arrived while the model still loads
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-accel-buffering"] == "no"
        received = ""
        with trio.fail_after(5):
            async for text in response.aiter_text():
                received += text
                # when progress and a few elapsed ticks were seen, the load completes
                if "elapsed" in received and not harness.router.release.is_set():
                    harness.router.release.set()
    # then reasoning chunks come first, then the upstream's own chunks, then [DONE]
    data = events(received)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    reasoning = [
        c["choices"][0]["delta"]["reasoning_content"]
        for c in chunks
        if c.get("object") == "chat.completion.chunk"
    ]
    assert all(c["model"] == "alias-of-m1" for c in chunks if c.get("object"))
    text = "".join(reasoning)
    assert "Stopping other-model" in text
    assert "queue" in text
    assert "ready after 1.25s" in text
    first_model_chunk = next(i for i, c in enumerate(chunks) if "object" not in c)
    assert first_model_chunk == len(reasoning)
    assert chunks[first_model_chunk]["choices"][0]["delta"]["content"] == "Hello"
    await wait_results(harness)
    result = harness.results[0]
    assert result.status == 200
    assert result.completion_tokens == 2
    assert not result.upstream_failed


async def test_failed_load_ends_with_an_error_event_and_done(harness: Harness) -> None:
    # given a load that fails
    harness.router.error = errors.upstream_error("m1", "exited before it was ready")
    harness.router.release.set()
    # when the client streams
    response = await harness.client.post("/v1/chat/completions", json={"stream": True})
    # then the 200 stream ends with the error object, then [DONE]
    assert response.status_code == 200
    data = events(response.text)
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "upstream_error"
    assert "exited before it was ready" in error["message"]
    await wait_results(harness)
    assert harness.results[0].status == 502
    assert harness.results[0].upstream_failed


async def test_a_refusal_before_any_progress_is_a_plain_error(harness: Harness) -> None:
    # given a router that refuses the request outright (over the concurrency limit)
    harness.router.refusal = errors.concurrency_limit("m1", 1)
    # when the client streams
    response = await harness.client.post("/v1/chat/completions", json={"stream": True})
    # then it gets the plain 429 before any stream
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "concurrency_limit"
    assert harness.results == []


async def test_client_leaving_during_the_wait_cancels_it(harness: Harness) -> None:
    async with harness.client.stream("POST", "/v1/chat/completions", json={"stream": True}) as r:
        with trio.fail_after(5), trio.CancelScope() as reading:
            async for _ in r.aiter_raw():
                reading.cancel()  # leave after the first progress chunk
    with trio.fail_after(5):
        await harness.router.cancelled.wait()
    await wait_results(harness)
    assert harness.results[0].client_disconnected
    assert harness.router.served == 0


async def wait_results(harness: Harness) -> None:
    with trio.fail_after(5):
        while not harness.results:
            await trio.sleep(0.01)
