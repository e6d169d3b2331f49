"""``python -m llama_swap_trio.watch`` as a user runs it: a real process against the fake feed.

With stdout not a terminal, rich's Live prints only the final frame when the view stops, which is
what these tests read. The tmux test at the end drives the real in-place view in a terminal.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.watch.fake_feed import FakeFeed

STARTUP = 30  # seconds: a fresh interpreter importing trio and rich, on a busy 2-core machine


def snapshot(*ids: str) -> dict[str, Any]:
    return {
        "type": "snapshot",
        "version": "0.1.0",
        "models": [{"id": i, "state": "ready", "ttl": 300, "in_flight": 0} for i in ids],
        "queue": [],
    }


def watch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llama_swap_trio.watch", *args]


def environment() -> dict[str, str]:
    return os.environ | {"COLUMNS": "120", "LINES": "50", "TERM": "xterm-256color"}


class Ran:
    """A process whose output is read as it runs."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = b""
        self.stderr = b""

    async def pump(self, stream: trio.abc.ReceiveStream, name: str) -> None:
        async for chunk in stream:
            setattr(self, name, getattr(self, name) + chunk)


@asynccontextmanager
async def running(command: list[str]) -> AsyncIterator[Ran]:
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment()
    )
    ran = Ran(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            assert process.stderr is not None
            nursery.start_soon(ran.pump, process.stdout, "stdout")
            nursery.start_soon(ran.pump, process.stderr, "stderr")
            yield ran
            with trio.fail_after(STARTUP):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def wait_for(condition: Callable[[], bool], timeout: float = STARTUP) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def test_watch_shows_the_feed_and_exits_0_on_ctrl_c(nursery: trio.Nursery) -> None:
    # given a daemon feed
    feed = FakeFeed(nursery, [snapshot("qwen", "llama")])
    await feed.start()
    async with running(watch_command("--url", feed.url)) as ran:
        # when the watch connects and a request ends
        await wait_for(lambda: feed.connected == 1)
        await feed.send(
            {
                "type": "request",
                "model": "qwen",
                "path": "/v1/chat/completions",
                "status": 200,
                "duration_ms": 812.0,
                "ttfb_ms": 20.0,
                "tokens_per_second": 33.3,
            }
        )
        # (a ping answered means the client's reader has passed the message to the view)
        await feed.ping()
        # and the user presses Ctrl-C
        ran.process.send_signal(signal.SIGINT)
    # then it exits 0, leaving the last frame with the models and the request
    assert ran.process.returncode == 0, ran.stderr.decode()
    out = ran.stdout.decode()
    assert f"connected to ws://127.0.0.1:{feed.port}/api/events" in out
    assert "qwen" in out
    assert "llama" in out
    assert "812 ms" in out
    assert "33.3" in out
    assert "Traceback" not in ran.stderr.decode()


async def test_watch_exits_2_when_the_daemon_refuses_the_key(nursery: trio.Nursery) -> None:
    # given a daemon that refuses the key
    feed = FakeFeed(nursery)
    feed.reject_status = 401
    await feed.start()
    # when the watch runs with a wrong key
    async with running(watch_command("--url", feed.url, "--api-key", "wrong")) as ran:
        pass
    # then it says so and exits 2
    assert ran.process.returncode == 2
    assert "the daemon refused the API key" in ran.stdout.decode()
    assert "the daemon refused the API key" in ran.stderr.decode()
    assert feed.headers["authorization"] == "Bearer wrong"


async def test_watch_exits_2_on_a_url_it_cannot_use() -> None:
    async with running(watch_command("--url", "ftp://example.com")) as ran:
        pass
    assert ran.process.returncode == 2
    assert "unsupported URL scheme" in ran.stderr.decode()


# -- end to end in a real terminal ---------------------------------------------------------------
# tmux gives the view a real terminal, so Live redraws in place; capture-pane reads the screen.
# Every wait is on what the screen shows, with a generous deadline.

TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self) -> None:
        self.socket = f"lst-watch-{uuid.uuid4().hex[:8]}"  # a private server: nothing shared

    async def run(self, *args: str) -> str:
        result = await trio.run_process(
            ["tmux", "-L", self.socket, *args], capture_stdout=True, capture_stderr=True
        )
        return result.stdout.decode()

    async def screen(self) -> str:
        return await self.run("capture-pane", "-p", "-t", "watch")

    async def wait_for_screen(self, *needles: str) -> str:
        with trio.fail_after(STARTUP):
            while True:
                text = await self.screen()
                if all(needle in text for needle in needles):
                    return text
                await trio.sleep(0.05)


@pytest.mark.skipif(TMUX is None, reason="needs tmux")
async def test_watch_in_a_terminal_updates_in_place_and_reconnects(
    nursery: trio.Nursery,
) -> None:
    # given a daemon feed and the watch running in a 120x50 terminal
    feed = FakeFeed(nursery, [snapshot("qwen")])
    await feed.start()
    tmux = Tmux()
    command = " ".join(watch_command("--url", feed.url))
    await tmux.run(
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "120",
        "-y",
        "50",
        f"{command}; echo EXITED $?; sleep 30",
    )
    try:
        # then it shows the snapshot
        await tmux.wait_for_screen("connected to", "qwen", "Queue: empty")
        # when a queue forms, the same screen shows it (in place: one header line)
        await feed.send({"type": "queue", "queue": [{"model": "qwen", "position": 1}]})
        screen = await tmux.wait_for_screen("Queue: 1. qwen")
        assert screen.count("llama-swap-trio watch") == 1
        # when the daemon goes away, it says it is reconnecting
        port = feed.port
        feed.stop()
        await tmux.wait_for_screen("retrying in")
        # and when the daemon is back with another model, the view shows it
        restarted = FakeFeed(nursery, [snapshot("mistral")])
        await restarted.start(port)
        screen = await tmux.wait_for_screen("connected to", "mistral")
        assert "qwen" not in screen.split("Queue")[0].split("Models")[-1]
        # and Ctrl-C ends it with status 0
        await tmux.run("send-keys", "-t", "watch", "C-c")
        await tmux.wait_for_screen("EXITED 0")
    finally:
        with trio.CancelScope(shield=True):
            await tmux.run("kill-server")
