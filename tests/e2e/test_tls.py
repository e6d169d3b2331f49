"""The daemon over TLS (SPEC 6.1): ``--tls-cert``/``--tls-key``, ``listening on https://``,
requests, a stream and the feed (``wss://``) with a self-signed certificate made in the test; the
flags' errors exit 2 naming the flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme
from trio_websocket import open_websocket_url

from tests.e2e.conftest import StartDaemon
from tests.edge.test_tls import Certs
from tests.fakes import fake_cmd, free_port

WAIT = 10


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


def config_text() -> str:
    return f"""
health_check_timeout = 30
start_port = {free_port()}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""


async def test_the_daemon_serves_https_and_the_feed_over_wss_with_the_cli_flags(
    start_daemon: StartDaemon, certs: Certs
) -> None:
    flags = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    daemon = await start_daemon(config_text(), *flags)
    assert daemon.url.startswith("https://127.0.0.1:")
    async with daemon.client(verify=certs.client) as client:
        health = await client.get("/health")
        assert (health.status_code, health.text) == (200, "OK")
        loaded = await client.post("/api/models/load/a")
        assert loaded.json() == {"msg": "ok", "state": "ready"}
        chat = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=chat) as streamed:
            lines = [line async for line in streamed.aiter_lines() if line.startswith("data:")]
        assert lines[-1] == "data: [DONE]"
    feed = "wss://" + daemon.url.removeprefix("https://") + "/api/events"
    async with open_websocket_url(feed, certs.client) as ws:
        with trio.fail_after(WAIT):
            first = json.loads(await ws.get_message())
    assert first["type"] == "snapshot"


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(config_text())
    return subprocess.run(
        [sys.executable, "-m", "llama_swap_trio", "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_tls_flags_go_together(tmp_path: Path, certs: Certs) -> None:
    done = run_cli("--tls-cert", str(certs.cert), tmp_path=tmp_path)
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr


def test_a_key_that_does_not_match_is_refused_naming_the_flag(tmp_path: Path, certs: Certs) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(other)
    done = run_cli("--tls-cert", str(certs.cert), "--tls-key", str(other), tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("--tls-key: the key in"), done.stderr
