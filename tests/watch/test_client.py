"""The watch client against a fake feed server on 127.0.0.1 (real sockets, real clock)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio

from llama_swap_trio.watch.client import feed_url, follow
from llama_swap_trio.watch.state import Link, WatchState
from tests.watch.fake_feed import FakeFeed

FAST = {"min_backoff": 0.02, "max_backoff": 0.1, "disconnect_timeout": 0.1}


def snapshot(*ids: str, state: str = "ready") -> dict[str, Any]:
    return {
        "type": "snapshot",
        "version": "0.1.0",
        "models": [{"id": i, "state": state, "ttl": 60, "in_flight": 0} for i in ids],
        "queue": [],
    }


class Watcher:
    """Runs ``follow`` in the background and remembers every connection notice it showed."""

    def __init__(self) -> None:
        self.state = WatchState()
        self.notices: list[str] = []
        self.links: list[Link] = []
        self.status: int | None = None

    def changed(self) -> None:
        if not self.notices or self.notices[-1] != self.state.connection.text:
            self.notices.append(self.state.connection.text)
            self.links.append(self.state.connection.link)

    async def run(self, url: str, api_key: str | None = None, **options: Any) -> None:
        self.status = await follow(url, api_key, self.state, self.changed, **(FAST | options))


async def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_client_shows_the_snapshot_and_then_events(nursery: trio.Nursery) -> None:
    # given a feed that opens with a snapshot
    feed = FakeFeed(nursery, [snapshot("qwen", "llama", state="stopped")])
    await feed.start()
    watcher = Watcher()
    # when the client connects
    nursery.start_soon(watcher.run, feed.url)
    await wait_for(lambda: watcher.state.synced)
    # then it shows the models, on the feed path
    assert list(watcher.state.models) == ["qwen", "llama"]
    assert watcher.state.connection.link is Link.CONNECTED
    assert feed.path == "/api/events"
    # and events that follow update the view
    await wait_for(lambda: feed.connected == 1)
    await feed.send(
        {
            "type": "model_state",
            "model": "qwen",
            "state": "starting",
            "previous": "stopped",
            "at": 1.0,
        }
    )
    await feed.send({"type": "queue", "queue": [{"model": "llama", "position": 1}]})
    await wait_for(lambda: bool(watcher.state.queue))
    assert watcher.state.models["qwen"].state == "starting"
    assert watcher.state.queue[0].model == "llama"


async def test_client_sends_the_api_key_as_a_bearer_header(nursery: trio.Nursery) -> None:
    feed = FakeFeed(nursery, [snapshot("qwen")])
    await feed.start()
    watcher = Watcher()
    nursery.start_soon(watcher.run, feed.url, "sekret")
    await wait_for(lambda: watcher.state.synced)
    assert feed.headers["authorization"] == "Bearer sekret"


async def test_client_ignores_messages_that_are_not_json(nursery: trio.Nursery) -> None:
    feed = FakeFeed(nursery, [snapshot("qwen")])
    await feed.start()
    watcher = Watcher()
    nursery.start_soon(watcher.run, feed.url)
    await wait_for(lambda: feed.connected == 1)
    for ws in list(feed._live):
        await ws.send_message("this is not json")
    await feed.send({"type": "queue", "queue": [{"model": "qwen", "position": 1}]})
    await wait_for(lambda: bool(watcher.state.queue))
    assert watcher.state.connection.link is Link.CONNECTED


async def test_client_reconnects_when_the_daemon_restarts(nursery: trio.Nursery) -> None:
    # given a client following a daemon
    feed = FakeFeed(nursery, [snapshot("qwen")])
    await feed.start()
    watcher = Watcher()
    nursery.start_soon(watcher.run, feed.url)
    await wait_for(lambda: "qwen" in watcher.state.models and feed.connected == 1)
    # when the daemon dies, and comes back on the same port with another configuration
    feed.stop()
    await wait_for(lambda: watcher.state.connection.link is not Link.CONNECTED)
    restarted = FakeFeed(nursery, [snapshot("llama", "mistral")])
    await restarted.start(feed.port)
    # then the client reconnects and shows the new snapshot
    await wait_for(lambda: "llama" in watcher.state.models)
    assert list(watcher.state.models) == ["llama", "mistral"]
    assert watcher.state.connection.link is Link.CONNECTED
    # and it said it was disconnected and reconnecting in between
    assert any(n.startswith("disconnected, reconnecting") for n in watcher.notices)
    assert watcher.status is None  # still running


async def test_client_reconnects_after_a_clean_shutdown_close(nursery: trio.Nursery) -> None:
    # given a client following a daemon
    feed = FakeFeed(nursery, [snapshot("qwen")])
    await feed.start()
    watcher = Watcher()
    nursery.start_soon(watcher.run, feed.url)
    await wait_for(lambda: feed.connected == 1)
    handshakes = feed.handshakes
    # when the daemon closes the feed as it does on shutdown (1001 "shutting down")
    await feed.close(1001, "shutting down")
    # then the client says why, and connects again
    await wait_for(lambda: feed.handshakes > handshakes and feed.connected == 1)
    assert any(
        n.startswith("disconnected, reconnecting") and "shutting down" in n for n in watcher.notices
    )


async def test_client_says_it_cannot_connect_and_retries_with_capped_backoff(
    nursery: trio.Nursery,
) -> None:
    # given nothing listening on the daemon's port
    port = free_port()
    watcher = Watcher()
    # when the client starts
    nursery.start_soon(watcher.run, f"http://127.0.0.1:{port}")
    # then it says it cannot connect, and retries with a growing, capped delay
    await wait_for(lambda: watcher.links.count(Link.UNREACHABLE) >= 5)
    url = f"ws://127.0.0.1:{port}/api/events"
    first = next(n for n in watcher.notices if n.startswith("cannot connect"))
    assert first.startswith(f"cannot connect to {url}, retrying in 0.02s")
    assert "Connection refused" in first
    delays = [
        float(n.split("retrying in ")[1].split("s")[0])
        for n in watcher.notices
        if n.startswith("cannot connect")
    ]
    assert delays == sorted(delays)
    assert delays[-1] == 0.1
    # and when the daemon comes up it connects
    feed = FakeFeed(nursery, [snapshot("qwen")])
    await feed.start(port)
    await wait_for(lambda: watcher.state.synced)
    assert watcher.state.connection.link is Link.CONNECTED


@pytest.mark.parametrize(
    ("status", "api_key", "expected"),
    [
        (401, "wrong", "the daemon refused the API key"),
        (401, None, "the daemon needs an API key, pass --api-key"),
        (403, "wrong", "the daemon refused the API key"),
    ],
)
async def test_client_gives_up_with_status_2_when_the_key_is_refused(
    nursery: trio.Nursery, status: int, api_key: str | None, expected: str
) -> None:
    # given a daemon that refuses the handshake
    feed = FakeFeed(nursery)
    feed.reject_status = status
    await feed.start()
    watcher = Watcher()
    # when the client connects
    with trio.fail_after(5):
        await watcher.run(feed.url, api_key)
    # then it stops with exit status 2 and says why, after one attempt
    assert watcher.status == 2
    assert watcher.state.connection.link is Link.REJECTED
    assert expected in watcher.state.connection.text
    assert feed.handshakes == 1


async def test_client_retries_on_other_http_answers(nursery: trio.Nursery) -> None:
    # given something on the port that answers 404 (not the daemon, or not its feed)
    feed = FakeFeed(nursery)
    feed.reject_status = 404
    await feed.start()
    watcher = Watcher()
    nursery.start_soon(watcher.run, feed.url)
    # then the client says so and keeps trying
    await wait_for(lambda: feed.handshakes >= 3)
    assert any("answered HTTP 404" in n for n in watcher.notices)
    assert watcher.status is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/api/events"),
        ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/api/events"),
        ("https://box.lan", "wss://box.lan/api/events"),
        ("127.0.0.1:9000", "ws://127.0.0.1:9000/api/events"),
        ("ws://h:1/api/events?logs=1", "ws://h:1/api/events?logs=1"),
        ("http://h:1/proxy/api/events", "ws://h:1/proxy/api/events"),
        ("http://h:1?api_key=k", "ws://h:1/api/events?api_key=k"),
    ],
)
def test_feed_url_turns_a_daemon_address_into_the_feed_url(given: str, expected: str) -> None:
    assert feed_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://h/x", "http://"])
def test_feed_url_rejects_what_is_not_a_daemon_address(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        feed_url(bad)
