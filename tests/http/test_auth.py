"""API keys (SPEC 3.6): each way to present a key, constant-time comparison, open endpoints."""

from __future__ import annotations

import base64
import hmac
from typing import Any

import httpx
import pytest

from llama_swap_trio.http import auth
from llama_swap_trio.http.app import create_app
from llama_swap_trio.http.auth import is_authorized, presented_keys
from tests.http.appkit import Daemonish, FakeRouter, config, model, running

KEYS = (b"sk-one", b"sk-two")


def scope(headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "headers": headers or [], "query_string": query}


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    "request_scope",
    [
        scope([(b"authorization", b"Bearer sk-two")]),
        scope([(b"authorization", b"bearer   sk-one ")]),
        scope([(b"x-api-key", b"sk-one")]),
        scope([(b"authorization", basic("anyone", "sk-two"))]),
        scope([(b"authorization", basic("", "sk-one"))]),
        scope(query=b"a=1&api_key=sk-one"),
        scope([(b"authorization", b"Bearer upstream-token"), (b"x-api-key", b"sk-two")]),
    ],
)
def test_each_way_of_presenting_a_key_is_accepted(request_scope: dict[str, Any]) -> None:
    assert is_authorized(request_scope, KEYS)


@pytest.mark.parametrize(
    "request_scope",
    [
        scope(),
        scope([(b"authorization", b"Bearer sk-three")]),
        scope([(b"authorization", b"Bearer sk-one-and-more")]),
        scope([(b"authorization", b"Token sk-one")]),
        scope([(b"authorization", b"Basic !!!not-base64")]),
        scope([(b"authorization", basic("sk-one", "wrong"))]),
        scope([(b"x-api-key", b"")]),
        scope(query=b"api_key="),
        scope(query=b"xapi_key=sk-one"),
    ],
)
def test_missing_or_wrong_keys_are_refused(request_scope: dict[str, Any]) -> None:
    assert not is_authorized(request_scope, KEYS)


def test_no_configured_keys_means_open() -> None:
    assert is_authorized(scope(), ())


def test_keys_are_compared_in_constant_time_against_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert is_authorized(scope([(b"x-api-key", b"sk-one")]), KEYS)
    # no early exit on the first match: both keys were compared
    assert calls == [(b"sk-one", b"sk-one"), (b"sk-one", b"sk-two")]


def test_presented_keys_lists_every_credential() -> None:
    request_scope = scope(
        [(b"authorization", b"Bearer a"), (b"x-api-key", b"b")], query=b"api_key=c%2Bd"
    )
    assert presented_keys(request_scope) == [b"a", b"b", b"c+d"]


# -- through the app -------------------------------------------------------------------------------


async def test_endpoints_need_a_key_except_health_and_options() -> None:
    cfg = config(model("q"), api_keys=("sk-one",))
    kit = Daemonish()
    app = create_app(
        cfg,
        FakeRouter(cfg),
        pool=None,  # type: ignore[arg-type]
        bus=kit.bus,
        proxy_logs=kit.proxy_logs,
        upstream_logs=kit.upstream_logs,
        shutting_down=kit.shutting_down,
    )
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await client.get("/v1/models")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Basic realm="llama-swap-trio"'
        assert refused.json()["error"]["code"] == "unauthorized"
        assert "sk-one" not in refused.text

        wrong = await client.post("/v1/chat/completions", headers={"x-api-key": "nope"}, json={})
        assert wrong.status_code == 401

        assert (await client.get("/v1/models", headers={"x-api-key": "sk-one"})).status_code == 200
        assert (await client.get("/v1/models?api_key=sk-one")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        preflight = await client.options("/v1/chat/completions")
        assert preflight.status_code == 204
        unknown = await client.get("/nowhere")
        assert unknown.status_code == 401  # no probing of paths without a key
