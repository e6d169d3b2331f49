"""Sanity checks of the fake upstream itself, so other tests can trust what it reports."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import trio
import trio_websocket

from tests.fakes import fake_argv, fake_cmd, running_fake


async def test_fake_answers_health_and_models() -> None:
    async with running_fake("--model-id", "m1") as fake, httpx.AsyncClient(base_url=fake.url) as c:
        health = await c.get("/health")
        models = (await c.get("/v1/models")).json()
    assert (health.status_code, health.text) == (200, "OK")
    assert [m["id"] for m in models["data"]] == ["m1"]
    assert any(f"pid {fake.process.pid}" in line for line in fake.lines)


async def test_fake_is_unhealthy_until_healthy_after() -> None:
    async with running_fake("--healthy-after", "0.5") as fake, httpx.AsyncClient() as c:
        first = await c.get(fake.url + "/health")
        with trio.fail_after(5):
            while (await c.get(fake.url + "/health")).status_code != 200:
                await trio.sleep(0.01)
    assert first.status_code == 503


async def test_fake_echoes_chat_request_with_usage_and_env() -> None:
    os.environ["FAKE_ECHO_TEST"] = "yes"
    try:
        async with running_fake("--model-id", "m1", "--echo-env", "FAKE_ECHO_TEST") as fake:
            async with httpx.AsyncClient(base_url=fake.url) as c:
                r = await c.post(
                    "/v1/chat/completions?x=1",
                    json={"model": "asked", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": "Bearer k"},
                )
    finally:
        del os.environ["FAKE_ECHO_TEST"]
    body = r.json()
    assert body["model"] == "asked"
    assert body["served_by"] == "m1"
    assert body["query"] == "x=1"
    assert body["headers"]["authorization"] == "Bearer k"
    assert body["body"]["messages"][0]["content"] == "hi"
    assert body["env"] == {"FAKE_ECHO_TEST": "yes"}
    assert "m1" in body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == 5


async def test_fake_streams_sse_chunks_then_done() -> None:
    async with running_fake("--model-id", "m2", "--tokens", "3") as fake:
        async with httpx.AsyncClient(base_url=fake.url) as c:
            r = await c.post("/v1/chat/completions", json={"model": "m2", "stream": True})
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.headers["content-type"] == "text/event-stream"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 3
    assert all("m2" in c["choices"][0]["delta"]["content"] for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_fake_counts_client_disconnect_during_stream() -> None:
    async with running_fake("--tokens", "100", "--token-interval", "0.05") as fake:
        async with httpx.AsyncClient(base_url=fake.url) as c:
            # Cancelling inside the loop ends httpx's generators cleanly and closes the socket.
            with trio.CancelScope() as scope:
                async with c.stream("POST", "/v1/chat/completions", json={"stream": True}) as r:
                    async for _ in r.aiter_raw():
                        scope.cancel()
        await fake.wait_for_line("client disconnected")
        async with httpx.AsyncClient(base_url=fake.url) as c:
            stats = (await c.get("/debug/stats")).json()
    assert stats["disconnects"] == 1
    assert stats["in_flight"] == 0


async def test_fake_crash_mid_stream_truncates_response() -> None:
    async with running_fake("--tokens", "5", "--crash-mid-stream", "2") as fake:
        async with httpx.AsyncClient(base_url=fake.url) as c:
            got = []
            try:
                async with c.stream("POST", "/v1/chat/completions", json={"stream": True}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            got.append(line)
            except httpx.RemoteProtocolError:
                pass
        with trio.fail_after(5):
            code = await fake.process.wait()
    assert len(got) == 2
    assert code == 1


async def test_fake_exit_at_startup_prints_and_exits_with_code() -> None:
    result = await trio.run_process(
        [*fake_argv("--exit-at-startup", "3"), "--port", "0"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 3
    assert b"fatal: cannot load model" in result.stdout
    assert b"fatal: cannot load model" in result.stderr


async def test_fake_exits_promptly_on_sigterm_unless_told_to_ignore() -> None:
    async with running_fake() as fake:
        fake.process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            assert await fake.process.wait() == 0
    async with running_fake("--ignore-sigterm") as stubborn:
        stubborn.process.send_signal(signal.SIGTERM)
        await stubborn.wait_for_line("received SIGTERM, ignoring")
        assert stubborn.process.poll() is None


async def test_fake_grandchild_shares_process_group() -> None:
    async with running_fake("--fork-grandchild") as fake:
        line = await fake.wait_for_line("grandchild pid")
        grandchild = int(line.rsplit(" ", 1)[1])
        assert os.getpgid(grandchild) == os.getpgid(fake.process.pid)


async def test_fake_never_answers_with_no_response_head() -> None:
    async with running_fake("--no-response-head") as fake:
        async with httpx.AsyncClient(base_url=fake.url) as c:
            with trio.move_on_after(0.3) as scope:
                await c.post("/v1/chat/completions", json={"model": "x"})
            health = await c.get("/health")
        await fake.wait_for_line("client disconnected")
    assert scope.cancelled_caught
    assert health.status_code == 200


async def test_fake_echoes_websocket_text_and_bytes() -> None:
    async with running_fake() as fake:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{fake.port}/ws") as ws:
            await ws.send_message("hello")
            text = await ws.get_message()
            await ws.send_message(b"\x00\x01" * 40000)
            data = await ws.get_message()
    assert text == "hello"
    assert data == b"\x00\x01" * 40000


async def test_fake_slow_endpoint_streams_plain_chunks() -> None:
    async with running_fake() as fake, httpx.AsyncClient(base_url=fake.url) as c:
        r = await c.get("/slow", params={"chunks": 3, "interval": 0.01})
    assert r.text == "chunk 0\nchunk 1\nchunk 2\n"


def test_fake_cmd_keeps_port_macro_and_quotes_knobs() -> None:
    cmd = fake_cmd("--model-id", "a b")
    assert cmd.endswith("--port ${PORT}")
    assert "'a b'" in cmd


async def test_fake_exit_after_exits_with_exit_code() -> None:
    async with running_fake("--exit-after", "0.2", "--exit-code", "7") as fake:
        with trio.fail_after(5):
            assert await fake.process.wait() == 7


async def test_fake_records_pid_file_and_events(tmp_path: Path) -> None:
    pid_file, events = tmp_path / "pid", tmp_path / "events"
    async with running_fake("--pid-file", str(pid_file), "--events", str(events)) as fake:
        with trio.fail_after(5):
            while "ready" not in events.read_text():
                await trio.sleep(0.01)
        assert int(pid_file.read_text()) == fake.process.pid
    kinds = [line.split()[0] for line in events.read_text().splitlines()]
    assert kinds == ["start", "listening", "ready"]


async def test_fake_chatty_forever_keeps_printing_and_serving() -> None:
    async with running_fake("--chatty-forever", "--chatty-lines", "3") as fake:
        await fake.wait_for_line("chatty forever line 500")
        async with httpx.AsyncClient(base_url=fake.url) as c:
            assert (await c.get("/health")).status_code == 200
    assert "startup line 2: loading tensors for fake" in fake.lines
