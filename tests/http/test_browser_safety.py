"""Browser safety (SPEC 6.1): foreign origins get 403, a rebinding Host gets 421."""

from __future__ import annotations

import pytest

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.http.browser_safety import BrowserSafety
from llama_swap_trio.upstream.api import UpstreamState
from tests.http.appkit import Daemonish, config, harness, model
from tests.http.test_app_events import handshake_status


def decide(
    origin: str | None,
    host: str | None = "127.0.0.1:8080",
    *,
    server: ServerConfig | None = None,
    listen: str | None = "127.0.0.1",
    scheme: str = "http",
) -> str:
    """``"ok"``, or the status and code a request with these headers is refused with."""
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    rules = BrowserSafety(server or ServerConfig(), listen)
    refused, echoed = rules.refusal({"headers": headers, "scheme": scheme})
    if refused is None:
        assert echoed == (origin.encode() if origin is not None else None)
        return "ok"
    return f"{refused.status} {refused.code}"


# -- the decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:5173",
        "https://localhost",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "HTTP://LOCALHOST:3000",
        "http://127.0.0.1:8080",  # the daemon's own listen address
    ],
)
def test_loopback_origins_are_allowed_on_any_port(origin: str) -> None:
    assert decide(origin) == "ok"


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://localhost.evil.example",
        "http://127.0.0.1.nip.io:8080",
        "null",
        "ftp://localhost",
        "not an origin",
    ],
)
def test_other_origins_are_refused_with_403(origin: str) -> None:
    assert decide(origin) == "403 origin_not_allowed"


def test_requests_without_an_origin_are_not_affected() -> None:
    assert decide(None) == "ok"


def test_the_daemons_own_origin_is_allowed() -> None:
    """A page the daemon served on a LAN name (listening beyond loopback) may call it."""
    assert decide("http://llm.lan:8080", "llm.lan:8080", listen="0.0.0.0") == "ok"
    assert decide("https://llm.lan", "llm.lan:443", listen="0.0.0.0", scheme="https") == "ok"
    assert (
        decide("http://llm.lan:9999", "llm.lan:8080", listen="0.0.0.0") == "403 origin_not_allowed"
    )
    # the same name over another scheme is another origin
    assert decide("https://llm.lan:8080", "llm.lan:8080", listen="0.0.0.0") != "ok"


def test_configured_origins_and_the_star() -> None:
    listed = ServerConfig(cors_origins=("https://ui.example",))
    assert decide("https://ui.example", server=listed) == "ok"
    assert decide("https://ui.example:443", server=listed) == "ok"
    assert decide("http://ui.example", server=listed) == "403 origin_not_allowed"
    everyone = ServerConfig(cors_origins=("*",))
    assert decide("http://evil.example", server=everyone) == "ok"
    assert decide("null", server=everyone) == "ok"


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "app.localhost", "127.0.0.2"],
)
def test_loopback_hosts_are_served(host: str) -> None:
    assert decide(None, host) == "ok"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "192.168.1.9", "[bad"])
def test_other_hosts_get_421_while_on_loopback(host: str) -> None:
    assert decide(None, host) == "421 host_not_allowed"
    # the Host rule comes first: a rebinding page is same-origin with itself
    assert decide(f"http://{host}", host) == "421 host_not_allowed"


def test_allowed_hosts_and_listening_beyond_loopback() -> None:
    allowed = ServerConfig(allowed_hosts=("llm.home.arpa", "box:9000"))
    assert decide(None, "llm.home.arpa:8080", server=allowed) == "ok"
    assert decide(None, "box:9000", server=allowed) == "ok"
    assert decide(None, "box:9001", server=allowed) == "421 host_not_allowed"
    for listen in ("0.0.0.0", "::", "", "192.168.1.9"):
        assert decide(None, "evil.example", listen=listen) == "ok"
    assert decide(None, "evil.example", listen=None) == "ok"  # unknown: a bare app in a test


def test_the_listen_address_is_a_served_host() -> None:
    assert decide(None, "127.0.1.1:8080", listen="127.0.1.1") == "ok"
    assert decide(None, "localhost:8080", listen="::1") == "ok"


# -- through the app -------------------------------------------------------------------------------

EVIL = {"origin": "http://evil.example"}


async def test_a_foreign_origin_never_reaches_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.post("/v1/chat/completions", json={"model": "q"}, headers=EVIL)
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "origin_not_allowed"
        assert "http://evil.example" in error["message"]
        assert "server.cors_origins" in error["message"]
        assert "access-control-allow-origin" not in response.headers
        assert h.router.serve_calls == []
        assert h.forward.calls == []


async def test_a_foreign_origin_cannot_use_the_management_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        h.router.set_state("q", UpstreamState.READY)
        for path in ("/api/models/unload", "/api/models/unload/q", "/api/models/load/q"):
            assert (await h.client.post(path, headers=EVIL)).status_code == 403
        assert (await h.client.get("/running", headers=EVIL)).status_code == 403
        assert h.router.unloads == []
        assert h.router.loads == []
        assert h.router.upstream("q").state == UpstreamState.READY


async def test_a_foreign_preflight_gets_403(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        preflight = await h.client.options(
            "/api/models/unload",
            headers={**EVIL, "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 403
        assert preflight.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in preflight.headers


async def test_an_allowed_origin_is_echoed_with_vary(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        local = {"origin": "http://localhost:3000"}
        response = await h.client.post("/v1/chat/completions", json={"model": "q"}, headers=local)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert response.headers["vary"] == "Origin"
        own = {"origin": h.url}  # a page this very address served
        assert (await h.client.get("/v1/models", headers=own)).status_code == 200


async def test_star_allows_every_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(model("q"), server=ServerConfig(cors_origins=("*",)))
    async with harness(cfg, monkeypatch) as h:
        response = await h.client.post("/v1/chat/completions", json={"model": "q"}, headers=EVIL)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://evil.example"
        preflight = await h.client.options("/v1/chat/completions", headers=EVIL)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://evil.example"


async def test_a_rebinding_host_gets_421(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        rebound = {"host": "evil.example:8080", "origin": "http://evil.example:8080"}
        response = await h.client.post("/api/models/unload", headers=rebound)
        assert response.status_code == 421
        error = response.json()["error"]
        assert error["code"] == "host_not_allowed"
        assert "evil.example" in error["message"]
        assert "server.allowed_hosts" in error["message"]
        assert (await h.client.get("/health", headers={"host": "evil.example"})).status_code == 421
        assert h.router.unloads == []


async def test_an_allowed_host_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(model("q"), server=ServerConfig(allowed_hosts=("llm.home.arpa",)))
    async with harness(cfg, monkeypatch) as h:
        named = {"host": "llm.home.arpa:8080"}
        response = await h.client.post("/v1/chat/completions", json={"model": "q"}, headers=named)
        assert response.status_code == 200
        # and a page served under that name is the daemon's own origin
        own = {**named, "origin": "http://llm.home.arpa:8080"}
        assert (await h.client.get("/v1/models", headers=own)).status_code == 200


async def test_the_host_rule_is_off_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch, Daemonish(listen_host="0.0.0.0")) as h:
        response = await h.client.get("/v1/models", headers={"host": "llm.lan:8080"})
        assert response.status_code == 200


async def websocket_status(base: str, path: str, origin: str) -> int:
    """The status a websocket handshake from a page of ``origin`` gets."""
    return await handshake_status(base, path, f"origin: {origin}\r\n")


async def test_a_foreign_page_cannot_open_a_websocket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Browsers apply no CORS to websockets: the Origin rule is the only guard."""
    async with harness(config(model("q")), monkeypatch) as h:
        assert await websocket_status(h.url, "/api/events", "http://evil.example") == 403
        assert await websocket_status(h.url, "/upstream/q/ws", "http://evil.example") == 403
        assert await websocket_status(h.url, "/api/events", "http://localhost:3000") == 101
        assert h.router.serve_calls == []
