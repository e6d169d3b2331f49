"""A model's pooled connections are closed before its stop signal (issue 14: fast stops).

llama-server (cpp-httplib) delays its exit on SIGTERM while a client holds an idle keep-alive
connection to it (~107 ms against ~7 ms without, measured). The fake upstream prints, from its
SIGTERM handler, how many accepted connections the client had not closed when the signal came:
that count must be 0 for every way a model is stopped while the daemon's pool held a connection.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Daemon, StartDaemon
from tests.fakes import fake_cmd, free_port

REPORT = "open client connections at SIGTERM: "


def config() -> str:
    return f"""
health_check_timeout = 30
log_to_stdout = "both"
start_port = {free_port()}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
[models.b]
cmd = {json.dumps(fake_cmd("--model-id", "b"))}
"""


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def wait_for_report(daemon: Daemon, model: str) -> int:
    line = await daemon.wait_for_line(f"[{model}] {REPORT}", timeout=15)
    return int(line.rsplit(REPORT, 1)[1].split()[0])


@pytest.mark.parametrize("stop_by", ["swap", "api_unload"])
async def test_no_pooled_connection_is_open_when_the_stop_signal_is_sent(
    start_daemon: StartDaemon, stop_by: str
) -> None:
    # given model a answered a request, so the daemon's pool keeps a keep-alive connection to it
    daemon = await start_daemon(config())
    async with daemon.client() as client:
        first = await client.post("/v1/chat/completions", json=chat("a"))
        assert first.status_code == 200
        daemon.note_upstreams()
        # when a is stopped: evicted by a request for b, or unloaded through the API
        if stop_by == "swap":
            second = await client.post("/v1/chat/completions", json=chat("b"))
            assert second.status_code == 200
        else:
            unloaded = await client.post("/api/models/unload/a")
            assert unloaded.status_code == 200
    # then, at the moment a received SIGTERM, no connection of ours to it was open
    assert await wait_for_report(daemon, "a") == 0
