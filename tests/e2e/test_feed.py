"""The live feed end to end (SPEC 5): the real daemon, real fake upstreams, trio-websocket clients.

Each test reads the feed until the message it waits for arrives (inside ``fail_after``); nothing
sleeps to wait for a state.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from llama_swap_trio import __version__
from tests.e2e.conftest import Daemon, StartDaemon
from tests.fakes import fake_cmd, free_port

Message = dict[str, Any]
Predicate = Callable[[Message], bool]

#: generous: two shared cores, other test runs at the same time
WAIT = 15.0


def chat(model: str, *, stream: bool = False, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        **extra,
    }


def models_config(
    *ids: str, knobs: dict[str, tuple[str, ...]] | None = None, extra: str = ""
) -> str:
    """A config with a fake upstream per model id (``knobs`` adds options per model)."""
    knobs = knobs or {}
    tables = "".join(
        f"[models.{m}]\ncmd = {json.dumps(fake_cmd('--model-id', m, *knobs.get(m, ())))}\n"
        for m in ids
    )
    return f"health_check_timeout = 30\nstart_port = {free_port()}\n{extra}\n{tables}"


def is_type(kind: str, **fields: object) -> Predicate:
    def match(message: Message) -> bool:
        return message.get("type") == kind and all(message.get(k) == v for k, v in fields.items())

    return match


class Feed:
    """The messages of one feed connection, read on demand."""

    def __init__(self, receive: Callable[[], Any]) -> None:
        self._receive = receive
        self.seen: list[Message] = []

    async def next(self) -> Message:
        message: Message = json.loads(await self._receive())
        self.seen.append(message)
        return message

    async def until(self, predicate: Predicate, timeout: float = WAIT) -> Message:
        """Read until a message matches; return it (everything read is in ``seen``)."""
        with trio.fail_after(timeout):
            while True:
                message = await self.next()
                if predicate(message):
                    return message

    async def find(self, predicate: Predicate, timeout: float = WAIT) -> Message:
        """The first message, already read or still to come, that matches."""
        for message in self.seen:
            if predicate(message):
                return message
        return await self.until(predicate, timeout)

    def of_type(self, kind: str) -> list[Message]:
        return [message for message in self.seen if message["type"] == kind]


@asynccontextmanager
async def open_feed_socket(
    daemon: Daemon, query: str = "", *, receive_buffer: int | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket connection to the feed over a TCP stream we own and always close
    (trio-websocket 0.12 leaks its socket when the server closes first; see watch/client.py).

    ``receive_buffer`` shrinks the socket's receive buffer, so a reader that stops reading stops
    the daemon's sends soon rather than after megabytes of kernel buffers.
    """
    host, port = daemon.url.removeprefix("http://").split(":")
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    stream = trio.SocketStream(sock)
    async with stream, trio.open_nursery() as nursery:
        await sock.connect((host, int(port)))
        ws = await wrap_client_stream(nursery, stream, f"{host}:{port}", "/api/events" + query)
        try:
            yield ws
        finally:
            with trio.move_on_after(1, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def websocket_feed(daemon: Daemon, query: str = "") -> AsyncIterator[Feed]:
    async with open_feed_socket(daemon, query) as ws:
        yield Feed(ws.get_message)


@asynccontextmanager
async def sse_feed(client: httpx.AsyncClient, query: str = "") -> AsyncIterator[Feed]:
    async with client.stream("GET", "/api/events" + query) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async with aclosing(response.aiter_lines()) as lines:

            async def receive() -> str:
                async for line in lines:
                    if line.startswith("data: "):
                        return line[6:]
                raise EndOfStream

            yield Feed(receive)


class EndOfStream(Exception):
    pass


async def post_chat(client: httpx.AsyncClient, model: str, **extra: object) -> httpx.Response:
    response = await client.post("/v1/chat/completions", json=chat(model, **extra))
    assert response.status_code == 200, response.text
    return response


# ---------------------------------------------------------------------------------------- tests


async def test_the_first_message_is_a_snapshot_of_models_and_queue(
    start_daemon: StartDaemon,
) -> None:
    config = models_config("a", "b", extra="global_ttl = 300")
    config = config.replace("[models.b]\n", '[models.b]\nname = "Bee"\nttl = 60\n')
    daemon = await start_daemon(config)
    async with daemon.client() as client:
        # given a ready model with an answer in flight
        slow = chat("a", stream=True, x_tokens=20, x_token_interval=0.05)
        async with client.stream("POST", "/v1/chat/completions", json=slow) as response:
            async with aclosing(response.aiter_lines()) as lines:
                async for line in lines:
                    if line.startswith("data: {"):
                        break
                # when a client connects to the feed
                async with websocket_feed(daemon) as feed:
                    with trio.fail_after(WAIT):
                        snapshot = await feed.next()
                async for _ in lines:
                    pass

    # SPEC 6.2: the started, unfinished requests
    (open_request,) = snapshot.pop("requests")
    assert open_request["model"] == "a"
    assert open_request["path"] == "/v1/chat/completions"
    assert set(open_request) == {"id", "model", "path", "at"}
    assert snapshot == {
        "type": "snapshot",
        "version": __version__,
        "models": [
            {"id": "a", "state": "ready", "ttl": 300, "in_flight": 1},
            {"id": "b", "state": "stopped", "name": "Bee", "ttl": 60, "in_flight": 0},
        ],
        "queue": [],
    }


async def test_a_request_that_loads_a_model_shows_its_states_and_the_swap(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config("a", "b"))
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        await feed.until(is_type("snapshot"))

        # when a is requested, then b (which evicts a)
        await post_chat(client, "a")
        await feed.until(is_type("request", model="a"))
        await post_chat(client, "b")
        await feed.until(is_type("request", model="b"))

    states = [(m["model"], m["previous"], m["state"]) for m in feed.of_type("model_state")]
    assert states == [
        ("a", "stopped", "starting"),
        ("a", "starting", "ready"),
        ("a", "ready", "stopping"),
        ("a", "stopping", "stopped"),
        ("b", "stopped", "starting"),
        ("b", "starting", "ready"),
    ]
    for message in feed.of_type("model_state"):
        assert isinstance(message["at"], float)
        assert "error" not in message
    swaps = feed.of_type("swap")
    assert [(s["phase"], s["model"], s["evict"]) for s in swaps] == [
        ("start", "a", []),
        ("done", "a", []),
        ("start", "b", ["a"]),
        ("done", "b", ["a"]),
    ]
    for done in (swaps[1], swaps[3]):
        assert done["ok"] is True
        assert done["duration_ms"] > 0
        assert "error" not in done
    # each model is ready before its swap is done, and the swap before the request is answered
    kinds = [(m["type"], m.get("model"), m.get("phase") or m.get("state")) for m in feed.seen]
    assert kinds.index(("model_state", "a", "ready")) < kinds.index(("swap", "a", "done"))
    assert kinds.index(("swap", "a", "done")) < kinds.index(("request", "a", None))


async def test_a_failed_load_reports_the_error(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config("a", knobs={"a": ("--exit-at-startup", "3")}))
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        await feed.until(is_type("snapshot"))
        response = await client.post("/v1/chat/completions", json=chat("a"))
        assert response.status_code == 502

        done = await feed.until(is_type("swap", phase="done"))
    assert done["ok"] is False
    assert "cannot load model" in done["error"]
    # the upstream's exit, with its reason, is reported before the load's failure
    states = feed.of_type("model_state")
    assert states[0]["state"] == "starting"
    assert states[-1]["state"] == "stopped"
    assert "exited" in states[-1]["error"]


async def test_request_events_carry_the_token_counts_of_the_response(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config("a"))
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        await feed.until(is_type("snapshot"))

        # a JSON answer (usage and llama-server timings in the body)
        await post_chat(client, "a", x_tokens=7)
        plain = await feed.until(is_type("request"))
        # a streamed answer (usage and timings in the last chunk)
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("a", stream=True, x_tokens=4)
        ) as response:
            assert response.status_code == 200
            await response.aread()
        streamed = await feed.until(is_type("request"))
        # embeddings: usage without timings, no completion
        embedded = await client.post("/v1/embeddings", json={"model": "a", "input": "one two"})
        assert embedded.status_code == 200
        embeddings = await feed.until(is_type("request"))

    for event, completion in ((plain, 7), (streamed, 4)):
        assert event["model"] == "a"
        assert event["path"] == "/v1/chat/completions"
        assert event["status"] == 200
        assert event["prompt_tokens"] >= 1
        assert event["completion_tokens"] == completion
        assert event["tokens_per_second"] == 100.0
        assert 0 <= event["ttfb_ms"] <= event["duration_ms"]
    assert embeddings["path"] == "/v1/embeddings"
    assert embeddings["prompt_tokens"] >= 1
    assert "completion_tokens" not in embeddings
    assert "tokens_per_second" not in embeddings


async def test_queue_messages_show_the_positions_of_waiting_requests(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config("a", "b", "c"))
    async with daemon.client() as client, websocket_feed(daemon) as feed:
        await feed.until(is_type("snapshot"))
        await post_chat(client, "a")
        statuses: list[int] = []

        async def request(model: str) -> None:
            statuses.append(
                (await client.post("/v1/chat/completions", json=chat(model))).status_code
            )

        # given a long answer from a in flight (b and c must wait: they would evict it)
        slow = chat("a", stream=True, x_tokens=60, x_token_interval=0.05)
        async with client.stream("POST", "/v1/chat/completions", json=slow) as response:
            async with aclosing(response.aiter_lines()) as lines:
                async for line in lines:
                    if line.startswith("data: {"):
                        break  # a's answer has begun
                async with trio.open_nursery() as nursery:
                    # when b, then c, are requested
                    nursery.start_soon(request, "b")
                    # (each says what it waits for: a's request in flight)
                    b_waits = {"model": "b", "position": 1, "reason": "in_flight"}
                    await feed.until(is_type("queue", queue=[b_waits]))
                    nursery.start_soon(request, "c")
                    both = [b_waits, {"model": "c", "position": 2, "reason": "in_flight"}]
                    await feed.until(is_type("queue", queue=both))
                    # then they are served once a's answer is read to its end
                    async for _ in lines:
                        pass
        await feed.until(is_type("request", model="c"))
    assert statuses == [200, 200]
    queues = [message["queue"] for message in feed.of_type("queue")]
    # c moved up when b's load began, and waits for that load
    assert [{"model": "c", "position": 1, "reason": "loading"}] in queues
    assert queues[-1] == []


async def test_log_messages_only_with_logs_1_and_never_an_api_key(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config("a", extra='api_keys = ["sekret-key"]'))
    auth = "?api_key=sekret-key"
    async with (
        daemon.client(headers={"authorization": "Bearer sekret-key"}) as client,
        websocket_feed(daemon, auth + "&logs=1") as with_logs,
        websocket_feed(daemon, auth) as without,
    ):
        await with_logs.until(is_type("snapshot"))
        await without.until(is_type("snapshot"))

        # the proxy strips its own api_key parameter before forwarding, but a key can still
        # reach an upstream's output some other way (here another parameter it prints)
        response = await client.post(
            "/v1/chat/completions" + auth + "&echo=sekret-key", json=chat("a")
        )
        assert response.status_code == 200

        upstream = await with_logs.find(
            lambda m: m["type"] == "log" and "request POST" in m["line"]
        )
        proxy = await with_logs.find(is_type("log", source="proxy"))
        await with_logs.find(is_type("request"))
        await without.find(is_type("request"))

    assert upstream["source"] == "upstream"
    assert upstream["model"] == "a"
    assert "/v1/chat/completions" in upstream["line"]
    assert "model" not in proxy
    assert not without.of_type("log")
    everything = json.dumps(with_logs.seen) + json.dumps(without.seen)
    assert "sekret-key" not in everything
    assert "[redacted]" in upstream["line"]


async def test_the_feed_needs_a_key_and_takes_it_from_the_query(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config("a", extra='api_keys = ["k1"]'))
    async with daemon.client() as client:
        assert (await client.get("/api/events")).status_code == 401
        assert await handshake_status(daemon, "/api/events") == 401
        async with sse_feed(client, "?api_key=k1") as sse:
            assert (await sse.until(is_type("snapshot")))["version"] == __version__
    async with websocket_feed(daemon, "?api_key=k1") as feed:
        await feed.until(is_type("snapshot"))


async def test_the_sse_feed_carries_the_same_messages(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config("a"))
    async with (
        daemon.client() as client,
        daemon.client() as feed_client,
        sse_feed(feed_client, "?logs=1") as feed,
    ):
        snapshot = await feed.until(lambda m: True)
        assert snapshot["type"] == "snapshot"
        await post_chat(client, "a", x_tokens=3)
        request = await feed.until(is_type("request"))

    states = [(m["previous"], m["state"]) for m in feed.of_type("model_state")]
    assert states == [("stopped", "starting"), ("starting", "ready")]
    assert [s["phase"] for s in feed.of_type("swap")] == ["start", "done"]
    assert request["completion_tokens"] == 3
    assert {m["source"] for m in feed.of_type("log")} == {"proxy", "upstream"}


async def test_shutdown_closes_the_feed_with_1001_at_once_while_requests_drain(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config("a"))
    async with (
        daemon.client() as client,
        daemon.client() as feed_client,
        open_feed_socket(daemon, "?logs=1") as ws,
        sse_feed(feed_client) as sse,
    ):
        feed = Feed(ws.get_message)
        await feed.until(is_type("snapshot"))
        await sse.until(is_type("snapshot"))
        # given an answer that takes ~3 s in flight
        slow = chat("a", stream=True, x_tokens=30, x_token_interval=0.1)
        async with client.stream("POST", "/v1/chat/completions", json=slow) as response:
            async with aclosing(response.aiter_lines()) as lines:
                async for line in lines:
                    if line.startswith("data: {"):
                        break
                # when the daemon is told to stop
                daemon.signal(signal.SIGTERM)
                signalled = trio.current_time()
                # then the feed says why and closes with 1001 well before the answer ends
                await feed.until(lambda m: m["type"] == "log" and "shutting down" in m["line"])
                code = await close_code(ws)
                closed_after = trio.current_time() - signalled
                with trio.fail_after(WAIT):
                    try:
                        while True:
                            await sse.next()
                    except EndOfStream:
                        pass
                # and the answer in flight still completes
                rest = [line async for line in lines]
    assert code == 1001
    assert closed_after < 2.0
    assert "data: [DONE]" in rest
    assert await daemon.wait_exit() == 0


async def test_the_daemon_exits_promptly_after_feed_clients_came_and_went(
    start_daemon: StartDaemon,
) -> None:
    # given one feed client that has left and one still connected
    daemon = await start_daemon(models_config("a"))
    async with websocket_feed(daemon) as gone:
        await gone.until(is_type("snapshot"))
    async with open_feed_socket(daemon) as ws:
        await Feed(ws.get_message).until(is_type("snapshot"))
        # when the daemon is told to stop
        daemon.signal(signal.SIGTERM)
        signalled = trio.current_time()
        # then the open one is closed with 1001 and the daemon exits without waiting out the
        # drain (hypercorn's websocket ping task used to hold it for the full 5 s)
        code = await close_code(ws)
    assert code == 1001
    assert await daemon.wait_exit() == 0
    assert trio.current_time() - signalled < 3.5


async def test_a_subscriber_that_reads_nothing_slows_no_request_and_is_told_it_lagged(
    start_daemon: StartDaemon,
) -> None:
    # given an upstream that prints ~2000 lines a second (each a ``log`` message)
    daemon = await start_daemon(
        models_config("a", knobs={"a": ("--chatty-forever", "--chatty-rate", "2000")})
    )
    async with (
        daemon.client() as client,
        open_feed_socket(daemon, "?logs=1", receive_buffer=4096) as slow,
    ):
        await post_chat(client, "a")
        # and a logs=1 subscriber that stops reading after its first message
        slow_feed = Feed(slow.get_message)
        await slow_feed.until(is_type("snapshot"))
        async with websocket_feed(daemon, "?logs=1") as fast:
            await fast.until(is_type("snapshot"))
            # when far more is published than its buffers can hold, and requests are made
            logs = 0
            requests = 0
            with trio.fail_after(60):
                while logs < 4000 or requests < 20:
                    started = trio.current_time()
                    await post_chat(client, "a")
                    assert trio.current_time() - started < 5.0
                    requests += 1
                    # a ``lagged`` notice may stand for the lost ``request`` event (under
                    # load the "fast" reader falls behind 2000 lines/s too): go on then
                    message = await fast.until(_log_or_request_end)
                    while message["type"] == "log":
                        logs += 1
                        message = await fast.until(_log_or_request_end)
        # then every request completed, and the slow subscriber finds the gap when it reads
        lagged = await slow_feed.until(is_type("lagged"), timeout=30)
        assert lagged["dropped"] > 0


# ---------------------------------------------------------------------------------------- helpers


def _log_or_request_end(message: Message) -> bool:
    return message["type"] in ("log", "request", "lagged")


async def close_code(ws: WebSocketConnection) -> int:
    """Read (and drop) messages until the server closes; its close code."""
    with trio.fail_after(WAIT):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return int(closed.reason.code)


async def handshake_status(daemon: Daemon, path: str) -> int:
    """The status a websocket handshake gets (raw: trio-websocket 0.12 leaks the socket of a
    rejected handshake, see llama_swap_trio/watch/client.py)."""
    host, port = daemon.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\n"
            "connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "sec-websocket-version: 13\r\n\r\n".encode()
        )
        received = b""
        with trio.fail_after(WAIT):
            while b"\r\n" not in received:
                chunk = await stream.receive_some()
                assert chunk, "closed before a status line"
                received += chunk
    return int(received.split(b" ", 2)[1])
