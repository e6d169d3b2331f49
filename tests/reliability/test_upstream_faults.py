"""Upstream faults against the real daemon: crashes, silence, flapping, floods of output, bad
commands, a stolen port and a client that reads slowly. Each ends in a clear answer, bounded
memory and no leaked in-flight count."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import httpx
import trio

from tests.e2e.conftest import StartDaemon
from tests.fakes import free_port
from tests.reliability.helpers import (
    DEBUG_ENV,
    chat,
    models_config,
    open_fds,
    raw_request,
    rss_kib,
    status_of,
    wait_quiet,
)


async def test_upstream_crash_mid_stream_truncates_the_response_and_the_next_request_restarts_it(
    start_daemon: StartDaemon,
) -> None:
    # given a model whose server dies after two chunks of a stream
    daemon = await start_daemon(
        models_config({"a": ("--tokens", "10", "--crash-mid-stream", "2")}), env=DEBUG_ENV
    )
    async with daemon.client() as client:
        chunks: list[str] = []
        # when a client streams from it
        with trio.fail_after(10):
            try:
                body = chat("a", stream=True)
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            chunks.append(line)
            except httpx.RemoteProtocolError:
                pass  # the truncated chunked body: what a client must see
        # then the response was cut short, never completed nor hung
        assert 1 <= len(chunks) < 10
        assert "data: [DONE]" not in chunks
        # and the daemon serves the model again with a new process
        with trio.fail_after(10):
            again = await client.post("/v1/chat/completions", json=chat("a"))
        assert again.status_code == 200
        assert again.json()["served_by"] == "a"
        await wait_quiet(client)


async def test_upstream_that_never_sends_a_response_head_gets_504_after_response_header_timeout(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        models_config({"a": ("--no-response-head",)}, model_extra="timeouts.response_header = 1"),
        env=DEBUG_ENV,
    )
    async with daemon.client() as client:
        await client.post("/api/models/load/a")
        started = trio.current_time()
        with trio.fail_after(10):
            response = await client.post("/v1/chat/completions", json=chat("a"))
        elapsed = trio.current_time() - started
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "gateway_timeout"
        assert 0.9 <= elapsed < 5
        await wait_quiet(client)
        # the upstream saw its request abandoned (the proxy closed the connection)
        with trio.fail_after(5):
            while (await client.get("/upstream/a/debug/stats")).json()["disconnects"] < 1:
                await trio.sleep(0.05)


async def test_flapping_health_makes_the_model_ready_once_and_it_keeps_serving(
    start_daemon: StartDaemon,
) -> None:
    # given a server whose /health alternates 503 and 200 every 0.3 s
    daemon = await start_daemon(models_config({"a": ("--flap-health", "0.3")}), env=DEBUG_ENV)
    async with daemon.client() as client:
        first = await client.post("/v1/chat/completions", json=chat("a"))
        assert first.status_code == 200
        pid = first.json()["pid"]
        # when requests keep coming while /health goes up and down
        with trio.fail_after(15):
            for _ in range(15):
                response = await client.post("/v1/chat/completions", json=chat("a"))
                assert response.status_code == 200
                assert response.json()["pid"] == pid  # never restarted
                await trio.sleep(0.1)
        state = await wait_quiet(client)
        assert [m["state"] for m in state["models"]] == ["ready"]


async def test_an_upstream_printing_megabytes_of_logs_keeps_daemon_memory_bounded(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        models_config({"a": ("--chatty-forever", "--chatty-rate", "40000")}), env=DEBUG_ENV
    )
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        await trio.sleep(0.5)  # let the flood start
        before = rss_kib(daemon.process.pid)
        # when it prints ~3 MB/s for 3 s
        started = trio.current_time()
        peak = before
        while trio.current_time() - started < 3:
            peak = max(peak, rss_kib(daemon.process.pid))
            response = await client.post("/v1/chat/completions", json=chat("a"))
            assert response.status_code == 200  # and it still serves requests meanwhile
            await trio.sleep(0.1)
        async with client.stream("GET", "/logs/stream/a") as stream:
            first = await stream.aiter_text().__anext__()
    # then the output was read (the fake logs each request too, and would block on a full pipe:
    # the answers above prove the pipe is drained) and memory grew by far less than ~9 MB
    assert "chatty forever line" in first
    assert peak - before < 40 * 1024, f"RSS grew by {peak - before} KiB"


async def test_a_cmd_that_does_not_exist_gives_502_within_a_second(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    not_executable = tmp_path / "server.sh"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(stat.S_IRUSR | stat.S_IWUSR)
    daemon = await start_daemon(
        f"""
health_check_timeout = 60
start_port = {free_port()}
[models.missing]
cmd = "/nonexistent/llama-server --port ${{PORT}}"
[models.noexec]
cmd = "{not_executable} --port ${{PORT}}"
""",
        env=DEBUG_ENV,
    )
    async with daemon.client() as client:
        for model, words in (("missing", "/nonexistent/llama-server"), ("noexec", "server.sh")):
            started = trio.current_time()
            response = await client.post("/v1/chat/completions", json=chat(model))
            elapsed = trio.current_time() - started
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error["code"] == "upstream_error"
            assert words in error["message"]
            assert elapsed < 1.0
        state = await wait_quiet(client)
        assert {m["state"] for m in state["models"]} == {"stopped"}


async def test_a_port_held_by_another_process_fails_the_start_and_names_the_port(
    start_daemon: StartDaemon,
) -> None:
    # given a stranger already listening on the model's port, recording what it receives
    port = free_port()
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", port))
    stranger.listen(16)
    received: list[bytes] = []

    async def accept_and_record() -> None:
        listener = trio.socket.from_stdlib_socket(stranger)
        while True:
            conn, _ = await listener.accept()
            with conn:
                with trio.move_on_after(0.5):
                    while data := await conn.recv(4096):
                        received.append(data)

    daemon = await start_daemon(
        models_config({"a": ()}).replace(
            "start_port = ", f"start_port = {port}\n# was: start_port = "
        ),
        env=DEBUG_ENV,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_record)
        async with daemon.client() as client:
            started = trio.current_time()
            response = await client.post("/v1/chat/completions", json=chat("a"))
            elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    stranger.close()
    # then a clear 502 naming the port, quickly, and the stranger never got a request
    assert response.status_code == 502, response.text
    assert str(port) in response.json()["error"]["message"]
    assert elapsed < 2.0
    assert not any(b"HTTP/1.1" in data for data in received)


async def test_a_slow_reader_neither_grows_memory_nor_blocks_other_clients(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config({"a": ()}), env=DEBUG_ENV)
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        before = rss_kib(daemon.process.pid)
        host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
        # given a client that asks for a 64 MB stream and reads only its first bytes
        slow = socket.create_connection((host, int(port)))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        slow.sendall(
            b"GET /upstream/a/slow?chunks=4000&interval=0&pad=16000 HTTP/1.1\r\n"
            b"Host: localhost\r\n\r\n"
        )
        assert b"200" in slow.recv(1024)
        try:
            # when other clients use the same model meanwhile
            with trio.fail_after(10):
                for _ in range(20):
                    response = await client.post("/v1/chat/completions", json=chat("a"))
                    assert response.status_code == 200
            # then the slow stream is held back, not buffered: it is still in flight upstream
            stats = (await client.get("/upstream/a/debug/stats")).json()
            assert stats["in_flight"] == 1
            grown = rss_kib(daemon.process.pid) - before
            assert grown < 32 * 1024, f"RSS grew by {grown} KiB"
        finally:
            slow.close()
        state = await wait_quiet(client)
        assert state["models"][0]["in_flight"] == 0


async def test_the_debug_endpoint_is_off_by_default(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config({"a": ()}))
    async with daemon.client() as client:
        assert (await client.get("/debug/state")).status_code == 404


async def test_closed_client_connections_release_their_descriptors_at_once(
    start_daemon: StartDaemon,
) -> None:
    # given a daemon and its descriptor count
    daemon = await start_daemon(models_config({"a": ()}))
    pid = daemon.process.pid
    async with daemon.client() as client:
        assert (await client.get("/health")).status_code == 200
    baseline = open_fds(pid)

    # when 30 clients each make a keep-alive request and then close their connection
    def burst() -> None:
        for _ in range(30):
            response = raw_request(daemon.url, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert status_of(response) == 200

    await trio.to_thread.run_sync(burst)
    # then their sockets are closed in the daemon too, long before keep_alive_timeout (75 s)
    with trio.fail_after(5):
        while open_fds(pid) > baseline + 1:
            await trio.sleep(0.05)
