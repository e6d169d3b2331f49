"""``watch`` in a real terminal (tmux) against the real daemon (SPEC 6.2): a stream in flight
shows live, failures show with their error codes, and the view fits 80x24 and 160x45.

Set ``LST_WATCH_CAPTURES=DIR`` to keep the captured screens (the issue note quotes them).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from tests.e2e.conftest import StartDaemon
from tests.e2e.test_feed import chat
from tests.fakes import fake_cmd, free_port

TMUX = shutil.which("tmux")
WAIT = 30.0


class Terminal:
    """A private tmux server running one command in a window of a given size."""

    def __init__(self, width: int, height: int) -> None:
        self.socket = f"lst-obs-{uuid.uuid4().hex[:8]}"
        self.size = (width, height)

    async def tmux(self, *args: str) -> str:
        result = await trio.run_process(
            ["tmux", "-L", self.socket, *args], capture_stdout=True, capture_stderr=True
        )
        return result.stdout.decode()

    async def start(self, command: str) -> None:
        width, height = self.size
        await self.tmux(
            "new-session", "-d", "-s", "w", "-x", str(width), "-y", str(height), command
        )
        # a detached session may keep tmux's default size: set the one we test
        await self.tmux("resize-window", "-t", "w", "-x", str(width), "-y", str(height))

    async def screen(self) -> str:
        return await self.tmux("capture-pane", "-p", "-t", "w")

    async def wait_for(self, *needles: str) -> str:
        text = ""
        with trio.move_on_after(WAIT):
            while True:
                text = await self.screen()
                if all(needle in text for needle in needles):
                    return text
                await trio.sleep(0.05)
        raise AssertionError(f"{needles} not all on the screen:\n{text}")


def keep(name: str, text: str) -> None:
    where = os.environ.get("LST_WATCH_CAPTURES")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / f"{name}.txt").write_text(text)


@pytest.mark.skipif(TMUX is None, reason="needs tmux (.ci/run installs it with apt-get)")
@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 45)])
async def test_watch_shows_a_live_stream_then_the_failures(
    start_daemon: StartDaemon, width: int, height: int
) -> None:
    config = (
        f'health_check_timeout = 30\nstart_port = {free_port()}\napi_keys = ["k3y"]\n'
        f"[models.qwen]\ncmd = {json.dumps(fake_cmd('--model-id', 'qwen'))}\n"
        "concurrency_limit = 1\n"
        f"[models.broken]\ncmd = {json.dumps(fake_cmd('--exit-at-startup', '3'))}\n"
    )
    daemon = await start_daemon(config)
    terminal = Terminal(width, height)
    command = f"{sys.executable} -m llama_swap_trio watch --url {daemon.url}"
    # the key from the environment (a key on the command line shows in ps)
    # (COLUMNS/LINES from the test runner's environment would override the terminal's size)
    await terminal.start(f"env -u COLUMNS -u LINES LLAMA_SWAP_TRIO_API_KEY=k3y {command}; sleep 30")
    try:
        await terminal.wait_for("connected to", "qwen", "broken")
        async with daemon.client(headers={"authorization": "Bearer k3y"}) as client:
            stream = chat("qwen", stream=True, x_tokens=60, x_token_interval=0.1)
            async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                async with aclosing(response.aiter_lines()) as lines:
                    async for line in lines:
                        if line.startswith("data: {"):
                            break
                    # during the stream: in flight with its chunks and a live rate
                    during = await terminal.wait_for("In flight (1)", "/s")
                    keep(f"{width}x{height}-during-stream", during)
                    refused = await client.post("/v1/chat/completions", json=chat("qwen"))
                    assert refused.status_code == 429
                    async for _ in lines:
                        pass
            for _ in range(3):
                failed = await client.post("/v1/chat/completions", json=chat("broken"))
                assert failed.status_code == 502
        after = await terminal.wait_for("In flight: none", "upstream_error", "concurrency_limit")
        keep(f"{width}x{height}-after-failures", after)
    finally:
        with trio.CancelScope(shield=True):
            await terminal.tmux("kill-server")
    for text in (during, after):
        lines = text.rstrip("\n").splitlines()
        assert len(lines) <= height
        assert all(len(line) <= width for line in lines)
        assert "Last requests" in text or "Requests: none yet" in text
    row = next(line for line in during.splitlines() if "/s" in line and "qwen" in line)
    assert row.split()[0] == "qwen"
    assert "failed:" in after  # the failed swaps, each on one line
    assert sum("failed:" in line for line in after.splitlines()) <= 3
    assert "Last requests, 4 failed" in after
