"""Routing end to end: model-routed requests, /upstream, CORS, methods, lifespan, events."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.feed.bus import EventBus, Subscription
from llama_swap_trio.http import app as app_module
from llama_swap_trio.http.forward import ForwardResult
from llama_swap_trio.upstream.api import UpstreamState
from tests.http.appkit import config, filters, harness, model


async def request_event(events: Subscription) -> dict[str, Any]:
    """The next ``request`` event (the end of a request), skipping the others."""
    with trio.fail_after(5):
        while True:
            event = dict(await events.get())
            if event["type"] == "request":
                return event


async def test_model_request_is_forwarded_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(model("qwen", aliases=("gpt",)))
    async with harness(cfg, monkeypatch) as h:
        with h.kit.bus.subscribe() as events:
            response = await h.client.post("/v1/chat/completions", json={"model": "gpt"})
            assert response.status_code == 200
            assert response.json()["model"] == "qwen"
            assert h.router.serve_calls == [("qwen", False)]
            (call,) = h.forward.calls
            assert json.loads(call.body) == {"model": "gpt"}  # aliases are not rewritten
            assert call.target is None
            with trio.fail_after(5):
                start = dict(await events.get())
            event = await request_event(events)
    assert start.pop("at") == event.pop("at")
    assert start == {
        "type": "request_start",
        "id": event["id"],
        "model": "qwen",
        "path": "/v1/chat/completions",
    }
    # times from arrival (the fake forwarder reports no first byte)
    assert event.pop("duration_ms") >= 0
    assert 0 <= event.pop("queue_ms") < 1000  # granted at once (real clock)
    assert event == {
        "type": "request",
        "id": start["id"],
        "model": "qwen",
        "path": "/v1/chat/completions",
        "status": 200,
        "ttfb_ms": None,
        "load_ms": 0.0,
        "upstream_ttfb_ms": 1.5,
        "prompt_tokens": 7,
        "completion_tokens": 9,
        "tokens_per_second": 12.5,
    }


async def test_request_event_omits_unknown_token_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        h.forward.result = ForwardResult(status=500, ttfb_ms=None, duration_ms=1.0)
        with h.kit.bus.subscribe() as events:
            await h.client.post("/v1/embeddings", json={"model": "q"})
            event = await request_event(events)
    assert event["status"] == 500
    assert not {"prompt_tokens", "completion_tokens", "tokens_per_second", "error"} & set(event)


async def test_rewritten_body_is_forwarded_with_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    m = model("q", use_model_name="org/q", filters=filters(set_params={"temperature": 0.1}))
    async with harness(config(m), monkeypatch) as h:
        await h.client.post("/v1/completions", json={"model": "q", "prompt": "hi"})
        (call,) = h.forward.calls
        assert json.loads(call.body) == {"model": "org/q", "prompt": "hi", "temperature": 0.1}
        lengths = [v for k, v in call.headers if k == b"content-length"]
        assert lengths == [str(len(call.body)).encode()]


async def test_get_endpoints_take_the_query_model(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("org/m")), monkeypatch) as h:
        response = await h.client.get("/props", params={"model": "org/m"})
        assert response.status_code == 200
        assert h.router.serve_calls == [("org/m", False)]


async def test_client_leaving_while_waiting_cancels_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        h.router.gate = trio.Event()
        with h.kit.bus.subscribe() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(h.client.post, "/v1/chat/completions", json={"model": "q"})
                )
                with trio.fail_after(5):
                    while h.router.waiting == 0:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()  # the client goes away
            with trio.fail_after(5):
                while h.router.cancelled_waits == 0:
                    await trio.sleep(0.01)
            assert h.forward.calls == []
            # nothing was forwarded, but the request started, so its end is reported
            event = await request_event(events)
            assert event["status"] == 499
            assert "error" not in event


async def test_client_leaving_during_forwarding_still_reports_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        h.forward.hold = trio.Event()
        with h.kit.bus.subscribe() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(h.client.post, "/v1/chat/completions", json={"model": "q"})
                )
                with trio.fail_after(5):
                    while not h.forward.calls:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            event = await request_event(events)
        assert event["status"] == 499
        assert h.router.in_flight["q"] == 0


async def test_streaming_chat_for_a_loading_state_model_that_is_not_ready_uses_the_loading_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []

    async def fake_loading(scope: Any, receive: Any, send: Any, **kw: Any) -> ForwardResult:
        seen.append(kw)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return ForwardResult(status=200, ttfb_ms=None, duration_ms=5.0)

    monkeypatch.setattr(app_module, "serve_with_loading_state", fake_loading)
    m = model("q", send_loading_state=True, aliases=("a",))
    async with harness(config(m), monkeypatch) as h:
        with h.kit.bus.subscribe() as events:
            streamed = await h.client.post(
                "/v1/chat/completions", json={"model": "a", "stream": True}
            )
            assert streamed.text == "data: [DONE]\n\n"
            assert seen[0]["requested_name"] == "a"
            assert seen[0]["model"].id == "q"
            assert (await request_event(events))["status"] == 200
        # not streaming, another path, or already ready: the normal path
        await h.client.post("/v1/chat/completions", json={"model": "a"})
        await h.client.post("/v1/completions", json={"model": "a", "stream": True})
        h.router.set_state("q", UpstreamState.READY)
        await h.client.post("/v1/chat/completions", json={"model": "a", "stream": True})
        assert len(seen) == 1
        assert len(h.forward.calls) == 3


# -- /upstream -------------------------------------------------------------------------------------


async def test_upstream_forwards_the_raw_rest_of_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("author"), model("author/model")), monkeypatch) as h:
        response = await h.client.get("/upstream/author/model/v1/files/a%2Fb?x=1")
        assert response.status_code == 200
        (call,) = h.forward.calls
        assert (call.model, call.target) == ("author/model", "/v1/files/a%2Fb?x=1")
        await h.client.post("/upstream/author/slots", content=b"raw body")
        assert (h.forward.calls[1].model, h.forward.calls[1].body) == ("author", b"raw body")


@pytest.mark.parametrize(("method", "status"), [("GET", 301), ("HEAD", 301), ("POST", 308)])
async def test_upstream_model_without_slash_redirects_keeping_the_query(
    monkeypatch: pytest.MonkeyPatch, method: str, status: int
) -> None:
    async with harness(config(model("org/m")), monkeypatch) as h:
        response = await h.client.request(method, "/upstream/org%2Fm?a=1&b=2")
        assert response.status_code == status
        assert response.headers["location"] == "/upstream/org%2Fm/?a=1&b=2"
        assert h.router.serve_calls == []


async def test_upstream_unknown_model_and_bare_prefix_are_404(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        unknown = await h.client.get("/upstream/nope/v1/models")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        assert (await h.client.get("/upstream")).status_code == 404
        assert (await h.client.get("/upstream/")).status_code == 404


async def test_ignored_paths_never_start_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        refused = await h.client.get("/upstream/q/static/app.js")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "model_not_loaded"
        assert h.router.serve_calls == [("q", True)]
        h.router.set_state("q", UpstreamState.READY)
        assert (await h.client.get("/upstream/q/static/app.js?v=2")).status_code == 200
        assert (await h.client.get("/upstream/q/")).status_code == 200
        assert h.router.serve_calls[1:] == [("q", True), ("q", False)]


# -- methods, CORS, lifespan -----------------------------------------------------------------------


async def test_known_path_with_a_wrong_method_is_405(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.get("/v1/chat/completions")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert (await h.client.delete("/api/models/load/q")).status_code == 405
        assert (await h.client.post("/v1/models")).status_code == 405


async def test_options_anywhere_is_a_cors_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.options(
            "/anything/at/all",
            headers={
                "origin": "http://localhost:5173",
                "access-control-request-headers": "X-Custom, Authorization, bad header",
            },
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert response.headers["vary"] == "Origin"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert response.headers["access-control-allow-headers"] == "X-Custom, Authorization"
        assert response.headers["access-control-max-age"] == "86400"
        bare = await h.client.options("/v1/models")
        assert bare.headers["access-control-allow-origin"] == "*"
        assert "Content-Type" in bare.headers["access-control-allow-headers"]


async def test_requests_with_an_allowed_origin_get_allow_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = config(model("q"), server=ServerConfig(cors_origins=("http://ui.example",)))
    async with harness(cfg, monkeypatch) as h:
        origin = {"origin": "http://ui.example"}
        models = await h.client.get("/v1/models", headers=origin)
        assert models.headers["access-control-allow-origin"] == "http://ui.example"
        forwarded = await h.client.post("/v1/completions", json={"model": "q"}, headers=origin)
        assert forwarded.headers["access-control-allow-origin"] == "http://ui.example"
        error = await h.client.get("/nope", headers=origin)
        assert error.headers["access-control-allow-origin"] == "http://ui.example"
        assert "access-control-allow-origin" not in (await h.client.get("/v1/models")).headers


async def test_health_answers_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(), monkeypatch) as h:
        response = await h.client.get("/health")
        assert (response.status_code, response.text) == (200, "OK")
        head = await h.client.head("/health")
        assert head.status_code == 200


async def test_lifespan_is_answered() -> None:
    app = app_module.create_app(
        config(),
        None,  # type: ignore[arg-type]
        pool=None,  # type: ignore[arg-type]
        bus=EventBus(),
        proxy_logs=None,  # type: ignore[arg-type]
        upstream_logs={},
        shutting_down=lambda: False,
    )
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
