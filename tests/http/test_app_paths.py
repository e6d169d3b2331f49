"""SPEC 6.1 paths: ``GET /api/version`` and the model-routed paths without ``/v1``."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest

from llama_swap_trio.http import app as app_module
from llama_swap_trio.http.forward import ForwardResult
from tests.http.appkit import config, harness, model


async def test_api_version_is_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.get("/api/version")
        assert response.status_code == 200
        assert response.json() == {"version": version("llama-swap-trio")}
        assert (await h.client.post("/api/version")).status_code == 405


async def test_api_version_needs_a_key_like_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q"), api_keys=("k1",)), monkeypatch) as h:
        assert (await h.client.get("/api/version")).status_code == 401
        authorized = await h.client.get("/api/version", headers={"authorization": "Bearer k1"})
        assert authorized.status_code == 200


@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/embeddings"])
async def test_paths_without_v1_route_like_their_v1_forms(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    async with harness(config(model("qwen", aliases=("gpt",))), monkeypatch) as h:
        response = await h.client.post(path, json={"model": "gpt"})
        assert response.status_code == 200
        assert response.json()["model"] == "qwen"
        (call,) = h.forward.calls
        assert call.path == path  # forwarded as sent: llama-server accepts both forms
        missing = await h.client.post(path, json={})
        assert missing.json()["error"]["code"] == "model_required"


async def test_chat_without_v1_gets_the_loading_state_too(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def fake_loading(scope: Any, receive: Any, send: Any, **kw: Any) -> ForwardResult:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return ForwardResult(200, None, 1.0)

    monkeypatch.setattr(app_module, "serve_with_loading_state", fake_loading)
    async with harness(config(model("q", send_loading_state=True)), monkeypatch) as h:
        response = await h.client.post("/chat/completions", json={"model": "q", "stream": True})
        assert response.status_code == 200
        assert calls == ["/chat/completions"]
