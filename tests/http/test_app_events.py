"""/api/events (SSE and websocket) and websockets under /upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from llama_swap_trio.http import app as app_module
from llama_swap_trio.routing.api import QueueEntry
from llama_swap_trio.upstream.api import UpstreamState
from tests.http.appkit import config, harness, model, streaming


def ws_url(base: str, path: str) -> str:
    return "ws://" + base.removeprefix("http://") + path


async def send_handshake(base: str, path: str, headers: str = "") -> trio.SocketStream:
    """A raw connection that has sent a websocket handshake for ``path`` (plus ``headers``,
    each line ending in CRLF)."""
    host, port = base.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{headers}upgrade: websocket\r\n"
        "connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "sec-websocket-version: 13\r\n\r\n".encode()
    )
    return stream


async def handshake_status(base: str, path: str, headers: str = "") -> int:
    """The status a websocket handshake gets (raw: trio-websocket's ConnectionRejected path
    leaves its socket unclosed, which ``filterwarnings = error`` turns into failures)."""
    stream = await send_handshake(base, path, headers)
    async with stream:
        received = b""
        with trio.fail_after(5):
            while b"\r\n" not in received:
                chunk = await stream.receive_some()
                assert chunk, "closed before a status line"
                received += chunk
    return int(received.split(b" ", 2)[1])


async def test_sse_feed_starts_with_a_snapshot_then_relays_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = config(model("b", name="Bee", ttl=60), model("a"))
    async with harness(cfg, monkeypatch) as h:
        h.router.set_state("b", UpstreamState.READY)
        h.router.in_flight["b"] = 2
        h.router.queue = (QueueEntry("a", 1),)
        async with streaming(h.url, "/api/events") as stream:
            assert stream.status == 200
            assert stream.headers["content-type"] == "text/event-stream"
            first = await stream.until("\n\n")
            snapshot = json.loads(first.split("data: ", 1)[1])
            assert snapshot["type"] == "snapshot"
            assert isinstance(snapshot["version"], str)
            assert snapshot["models"] == [
                {"id": "a", "state": "stopped", "ttl": 0, "in_flight": 0},
                {"id": "b", "state": "ready", "name": "Bee", "ttl": 60, "in_flight": 2},
            ]
            assert snapshot["queue"] == [{"model": "a", "position": 1}]
            with trio.fail_after(5):
                while h.kit.bus.subscriber_count == 0:
                    await trio.sleep(0.01)
            h.kit.bus.publish({"type": "queue", "queue": []})
            assert '{"type": "queue", "queue": []}\n\n' in await stream.until("\n\n")


async def test_sse_feed_ends_cleanly_when_the_bus_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("a")), monkeypatch) as h:
        async with streaming(h.url, "/api/events") as stream:
            await stream.until("\n\n")
            h.kit.bus.close()
            await stream.until("\r\n0\r\n\r\n")


async def test_websocket_feed_sends_the_same_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("a")), monkeypatch) as h:
        async with open_websocket_url(ws_url(h.url, "/api/events")) as ws:
            with trio.fail_after(5):
                snapshot = json.loads(await ws.get_message())
                assert snapshot["type"] == "snapshot"
                h.kit.bus.publish({"type": "model_state", "model": "a", "state": "starting"})
                event = json.loads(await ws.get_message())
        assert event == {"type": "model_state", "model": "a", "state": "starting"}
        with trio.fail_after(5):
            while h.kit.bus.subscriber_count:
                await trio.sleep(0.01)  # the subscription ends with the connection


async def test_websocket_feed_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("a"), api_keys=("k1",)), monkeypatch) as h:
        assert await handshake_status(h.url, "/api/events") == 401
        async with open_websocket_url(ws_url(h.url, "/api/events?api_key=k1")) as ws:
            with trio.fail_after(5):
                assert json.loads(await ws.get_message())["type"] == "snapshot"


async def test_websocket_under_upstream_is_tunnelled_while_holding_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tunnels: list[str] = []
    in_flight_seen: list[int] = []

    async def fake_tunnel(scope: Any, receive: Any, send: Any, *, grant: Any, target: str) -> None:
        tunnels.append(target)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f"{grant.model.id} {target}"})
        in_flight_seen.append(router.in_flight[grant.model.id])
        while (await receive())["type"] != "websocket.disconnect":
            pass

    monkeypatch.setattr(app_module, "tunnel_websocket", fake_tunnel)
    async with harness(config(model("org/m")), monkeypatch) as h:
        router = h.router
        async with open_websocket_url(ws_url(h.url, "/upstream/org/m/ws%2Fx?a=1")) as ws:
            with trio.fail_after(5):
                assert await ws.get_message() == "org/m /ws%2Fx?a=1"
        assert in_flight_seen == [1]
        with trio.fail_after(5):
            while router.in_flight["org/m"]:
                await trio.sleep(0.01)


async def test_websocket_refusals_carry_the_error_status(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        for path, status in [
            ("/upstream/nope/ws", 404),
            ("/elsewhere", 404),
            ("/upstream/q/app.js", 409),
        ]:
            assert await handshake_status(h.url, path) == status


async def test_websocket_client_leaving_while_its_model_loads_cancels_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a websocket under /upstream waiting for its model (the router holds it)
    async with harness(config(model("q")), monkeypatch) as h:
        h.router.gate = trio.Event()
        async with await send_handshake(h.url, "/upstream/q/ws"):
            with trio.fail_after(5):
                while h.router.waiting == 0:
                    await trio.sleep(0.01)
        # when the client goes away before the model is ready
        # then its wait is cancelled: the router drops it (it never causes a load, SPEC 3.5)
        with trio.fail_after(5):
            while h.router.cancelled_waits == 0:
                await trio.sleep(0.01)
        assert h.router.waiting == 0
