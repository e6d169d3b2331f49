"""The websocket tunnel under /upstream/{model}/..."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.http.websocket_tunnel import close_client_stream, upstream_ws_url

from .forward_support import (
    ProxyState,
    Recorder,
    closed_port,
    grant_for,
    proxy_app,
    start_server,
    upstream_app,
)


@pytest.fixture
async def proxy_ws(nursery: trio.Nursery) -> AsyncIterator[str]:
    upstream_url = await start_server(nursery, upstream_app(Recorder()))
    pool = ClientPool()
    proxy_url = await start_server(nursery, proxy_app(ProxyState(grant_for(upstream_url), pool)))
    yield proxy_url.replace("http://", "ws://")
    await pool.aclose()


async def test_messages_are_echoed_through_the_tunnel(proxy_ws: str) -> None:
    with trio.fail_after(5):
        async with open_websocket_url(proxy_ws + "/ws?x=1", subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send_message("hello")
            assert await ws.get_message() == "echo:hello"
            await ws.send_message(b"\x00\x01")
            assert await ws.get_message() == b"echo:\x00\x01"


async def test_upstream_close_code_reaches_the_client(proxy_ws: str) -> None:
    with trio.fail_after(5):
        async with open_websocket_url(proxy_ws + "/ws") as ws:
            await ws.send_message("close:4001")
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
            await close_client_stream(ws)  # trio-websocket's own client leaks it otherwise
    assert caught.value.reason.code == 4001
    assert caught.value.reason.reason == "bye"


async def test_refused_upstream_denies_the_handshake_with_502(nursery: trio.Nursery) -> None:
    # given a proxy whose upstream does not listen
    pool = ClientPool()
    grant = grant_for(f"http://127.0.0.1:{closed_port()}")
    proxy_url = await start_server(nursery, proxy_app(ProxyState(grant, pool)))
    # when a client asks for a websocket (a raw upgrade request: trio-websocket's client leaks
    # its socket when rejected)
    upgrade = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    async with httpx.AsyncClient(trust_env=False) as client:
        with trio.fail_after(5):
            response = await client.get(proxy_url + "/ws", headers=upgrade)
    await pool.aclose()
    # then the handshake is denied with our 502 envelope
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


def test_upstream_ws_url_keeps_base_path_and_target() -> None:
    assert upstream_ws_url("http://127.0.0.1:5800", "/ws?a=%2F") == "ws://127.0.0.1:5800/ws?a=%2F"
    assert upstream_ws_url("https://h/api/", "/x") == "wss://h/api/x"
