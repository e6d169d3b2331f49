"""Keys: compared in constant time, never written to logs or the feed, required on the log and
feed endpoints; and the default listen address is loopback."""

from __future__ import annotations

import base64
import hmac

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from llama_swap_trio import cli
from llama_swap_trio.http import auth
from tests.e2e.conftest import StartDaemon
from tests.reliability.helpers import chat, models_config, raw_request, status_of

KEY = "sk-SECRET-key-4242"
WRONG = "sk-WRONG-key-9999"


def test_the_default_listen_address_is_loopback() -> None:
    assert cli.DEFAULT_LISTEN.startswith("127.0.0.1:")
    args = cli._build_parser().parse_args(["serve"])
    assert args.listen.startswith("127.0.0.1:")


def test_every_presented_credential_is_compared_with_every_key_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    scope = {
        "headers": [(b"authorization", b"Bearer k1"), (b"x-api-key", b"nope")],
        "query_string": b"",
    }
    # a match on the first pair still compares every pair: no early exit
    assert auth.is_authorized(scope, [b"k1", b"k2"])
    assert compared == [(b"k1", b"k1"), (b"k1", b"k2"), (b"nope", b"k1"), (b"nope", b"k2")]


async def test_keys_never_reach_the_logs_or_the_feed(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(
        models_config(
            {"a": ()},
            extra=f'api_keys = ["{KEY}"]\nlog_level = "debug"\nlog_to_stdout = "both"',
        )
    )
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    feed_text: list[str] = []
    feed_open = trio.Event()

    async def read_feed(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/api/events?logs=1", headers={"x-api-key": KEY}) as r:
            assert r.status_code == 200
            feed_open.set()
            async for text in r.aiter_text():
                feed_text.append(text)

    async with daemon.client() as client, trio.open_nursery() as nursery:
        nursery.start_soon(read_feed, client)
        await feed_open.wait()
        # when clients authenticate every way there is, and also fail to
        authenticated = [
            {"headers": {"authorization": f"Bearer {KEY}"}},
            {"headers": {"x-api-key": KEY}},
            {"headers": {"authorization": f"Basic {basic}"}},
            {"params": {"api_key": KEY}},
        ]
        for how in authenticated:
            response = await client.post("/v1/chat/completions", json=chat("a"), **how)  # type: ignore[arg-type]
            assert response.status_code == 200
            response = await client.get("/upstream/a/some/path", **how)  # type: ignore[arg-type]
            assert response.status_code == 200
            assert response.json()["query"] == ""  # the proxy's credential is not forwarded
        for wrong in ({"authorization": f"Bearer {WRONG}"}, {"x-api-key": WRONG}):
            response = await client.post("/v1/chat/completions", json=chat("a"), headers=wrong)
            assert response.status_code == 401
        response = await client.get("/upstream/a/p", params={"api_key": WRONG})
        assert response.status_code == 401
        with trio.fail_after(5):  # the feed has seen the requests
            while sum(text.count('"type": "request"') for text in feed_text) < 8:
                await trio.sleep(0.05)
        logs = (await client.get("/logs", headers={"x-api-key": KEY})).text
        nursery.cancel_scope.cancel()
    # then neither key appears anywhere: daemon output, /logs, the feed
    everything = "\n".join(daemon.lines) + logs + "".join(feed_text)
    assert "request GET /some/path" in everything  # the upstream's own log was captured
    assert KEY not in everything
    assert WRONG not in everything
    assert basic not in everything


async def test_log_endpoints_and_the_feed_need_a_key(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config({"a": ()}, extra=f'api_keys = ["{KEY}"]'))
    async with daemon.client() as client:
        for path in ("/logs", "/logs/stream", "/logs/stream/proxy", "/logs/stream/a",
                     "/api/events", "/running", "/v1/models", "/debug/state"):  # fmt: skip
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"
        assert (await client.get("/logs", headers={"x-api-key": KEY})).status_code == 200
    # a websocket handshake without a key is refused with the 401 (raw, as trio-websocket leaks
    # its socket when a handshake fails)
    upgrade = (
        "GET /api/events HTTP/1.1\r\nHost: localhost\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    refused = await trio.to_thread.run_sync(raw_request, daemon.url, upgrade.encode())
    assert status_of(refused) == 401
    ws_url = daemon.url.replace("http://", "ws://") + "/api/events"
    async with open_websocket_url(ws_url + f"?api_key={KEY}") as ws:
        assert '"snapshot"' in await ws.get_message()
