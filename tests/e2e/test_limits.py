"""The fd reserve (SPEC 6.1 ``max_connections = 0``) end to end: a daemon under a 256-fd limit,
flooded with more stalled clients than it has descriptors, still starts a model and answers
``/health``, and its accept loop stays quiet (the issue's case: 300 clients sending a head with
``Content-Length: 100`` and 10 body bytes made ``/health`` time out, a model start fail with
``Too many open files`` and the accept loop log ten errors a second)."""

from __future__ import annotations

import json

import trio

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port

FLOOD = 300
STALLED = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
    + b"{" * 10
)


async def read_until(stream: trio.SocketStream, done: bytes, timeout: float) -> bytes:
    data = b""
    with trio.fail_after(timeout):
        while done not in data:
            more = await stream.receive_some(65536)
            assert more, data
            data += more
    return data


async def test_a_flood_of_stalled_clients_leaves_room_to_start_a_model_and_answer_health(
    start_daemon: StartDaemon,
) -> None:
    config = f"""
health_check_timeout = 30
start_port = {free_port()}
[server]
body_timeout = 3
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""
    daemon = await start_daemon(config, nofile=256)
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    # given a client connected before the flood (its first head is not due yet)
    early = await trio.open_tcp_stream(host, int(port))
    flood: list[trio.SocketStream] = []
    try:
        # when more stalled clients connect than the daemon has descriptors
        for _ in range(FLOOD):
            stream = await trio.open_tcp_stream(host, int(port))
            flood.append(stream)
            await stream.send_all(STALLED)
        # then a model still starts, and /health answers, on the early connection
        await early.send_all(
            b"POST /api/models/load/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        answers = await read_until(early, b"\r\n\r\nOK", 60)
        assert answers.startswith(b"HTTP/1.1 200 "), answers
        assert b'"state":"ready"' in answers.replace(b" ", b"")
        # and a new client is served once the stalled ones are closed (body_timeout)
        async with daemon.client() as client:
            health = await client.get("/health")
            assert (health.status_code, health.text) == (200, "OK")
    finally:
        for stream in [early, *flood]:
            await stream.aclose()
    log = "\n".join(daemon.lines)
    assert "Too many open files" not in log
    assert log.count("cannot accept") <= 1
