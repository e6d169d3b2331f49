"""SIGKILL of the daemon during a load and during a stream, then a restart on the same config:
no upstream outlives it, and the restarted daemon serves again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.conftest import StartDaemon, _group_members
from tests.reliability.helpers import DEBUG_ENV, chat, models_config, upstream_groups


@pytest.mark.parametrize("moment", ["load", "stream"])
async def test_sigkill_of_the_daemon_leaves_no_orphan_and_a_restart_serves(
    start_daemon: StartDaemon, tmp_path: Path, moment: str
) -> None:
    pid_file = tmp_path / "upstream.pid"
    knobs = ("--pid-file", str(pid_file), "--tokens", "200", "--token-interval", "0.05")
    if moment == "load":
        knobs += ("--startup-delay", "5")
    config = models_config({"a": knobs})
    daemon = await start_daemon(config, env=DEBUG_ENV)
    seen_chunk = trio.Event()

    async def request() -> None:
        try:
            async with daemon.client() as client:
                body = chat("a", stream=True)
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            seen_chunk.set()
        except httpx.HTTPError:
            pass  # the daemon died under it: expected

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request)
        # given the upstream was spawned (loading) or is streaming
        with trio.fail_after(15):
            while not pid_file.exists() or not pid_file.read_text().strip():
                await trio.sleep(0.02)
            if moment == "stream":
                await seen_chunk.wait()
        groups = upstream_groups(daemon)
        assert groups
        # when the daemon is SIGKILLed
        os.kill(daemon.process.pid, signal.SIGKILL)
        await daemon.wait_exit()
        # then every upstream group it started dies with it
        with trio.fail_after(10):
            while any(_group_members(g) for g in groups):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    # and a daemon restarted on the same config file serves the model again
    again = await start_daemon(config, "--config", str(daemon.config_path), env=DEBUG_ENV)
    async with again.client() as client:
        with trio.fail_after(20):
            response = await client.post("/v1/chat/completions", json=chat("a"))
        assert response.status_code == 200
        assert response.json()["served_by"] == "a"
    assert int(pid_file.read_text()) == response.json()["pid"]  # a new process, not an orphan
