"""Bad input found when tried (SPEC 6.1), against the real daemon: each gets a clean answer."""

from __future__ import annotations

import json

import trio

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_a_stream_over_the_concurrency_limit_gets_a_plain_429_before_any_stream(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        f"""
health_check_timeout = 30
start_port = {free_port()}
send_loading_state = true
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a", "--startup-delay", "1.5"))}
concurrency_limit = 1
"""
    )
    async with daemon.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            # the first request is admitted: its loading-state stream has begun
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream"
            refused = await client.post("/v1/chat/completions", json=chat("a", stream=True))
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "concurrency_limit"
            await r.aread()


async def test_a_body_cut_short_by_a_half_close_is_never_a_500(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(
        f"""
start_port = {free_port()}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""
    )
    host, port = daemon.url.removeprefix("http://").split(":")
    for path in ("/v1/chat/completions", "/upstream/a/x"):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 100\r\n\r\n".encode()
                + b'{"model": '
            )
            await stream.send_eof()  # the client stops sending: 90 body bytes never come
            received = b""
            with trio.fail_after(10):
                while data := await stream.receive_some():
                    received += data
        # closed without an answer, or a 400: never a 500
        assert received == b"" or received.startswith(b"HTTP/1.1 400 "), received
    async with daemon.client() as client:
        assert (await client.get("/health")).status_code == 200
