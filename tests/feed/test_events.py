"""/api/events in process (the app on a real socket, a fake router): query parsing and shutdown."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url, wrap_client_stream

from llama_swap_trio.http.events import wants_logs
from tests.http.appkit import config, harness, model, streaming


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", False),
        (b"logs=1", True),
        (b"api_key=k&logs=true", True),
        (b"logs=0", False),
        (b"logs=", False),
        (b"catalogs=1", False),
    ],
)
def test_logs_are_asked_for_with_logs_1(query: bytes, expected: bool) -> None:
    assert wants_logs({"query_string": query}) is expected


async def test_websocket_feed_gets_logs_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("a")), monkeypatch) as h:
        base = "ws://" + h.url.removeprefix("http://") + "/api/events"
        async with open_websocket_url(base) as plain, open_websocket_url(base + "?logs=1") as logs:
            with trio.fail_after(5):
                await plain.get_message()
                await logs.get_message()
                h.kit.bus.publish({"type": "log", "source": "proxy", "line": "hello"})
                h.kit.bus.publish({"type": "queue", "queue": []})
                assert json.loads(await logs.get_message())["type"] == "log"
                assert json.loads(await logs.get_message())["type"] == "queue"
                assert json.loads(await plain.get_message())["type"] == "queue"


async def test_websocket_feed_flushes_then_closes_with_1001_when_the_bus_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("a")), monkeypatch) as h:
        # our own stream, closed on the way out: trio-websocket 0.12 leaks its socket when the
        # server closes first (see llama_swap_trio/watch/client.py)
        host, port = h.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, "/api/events")
            with trio.fail_after(5):
                await ws.get_message()
                while h.kit.bus.subscriber_count == 0:
                    await trio.sleep(0.01)
                h.kit.bus.publish({"type": "queue", "queue": []})
                h.kit.bus.close()
                assert json.loads(await ws.get_message()) == {"type": "queue", "queue": []}
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            nursery.cancel_scope.cancel()
        assert closed.value.reason.code == 1001


async def test_a_feed_opened_during_shutdown_ends_after_its_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("a")), monkeypatch) as h:
        h.kit.bus.close()
        async with streaming(h.url, "/api/events") as stream:
            assert stream.status == 200
            assert '"type": "snapshot"' in await stream.until("\n\n")
            await stream.until("\r\n0\r\n\r\n")
