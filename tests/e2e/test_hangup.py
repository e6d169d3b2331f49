"""SIGHUP end to end: the hang-up of the daemon's own terminal shuts it down, ``kill -HUP`` reloads.

The daemon runs as a session leader with a pseudo-terminal as its controlling terminal and as its
stdin/stdout/stderr. Closing the pty's master side is what a terminal window, ``tmux
kill-session`` or a dropped ssh session does: the kernel hangs the terminal up and sends SIGHUP.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from tests.e2e.conftest import _descendant_groups, _group_members
from tests.fakes import fake_cmd, free_port


@attrs.define
class PtyDaemon:
    process: trio.Process
    master: trio.lowlevel.FdStream
    output: bytearray = attrs.field(factory=bytearray)
    url: str = ""

    async def pump(self) -> None:
        try:
            while data := await self.master.receive_some(65536):
                self.output += data
        except (OSError, trio.ClosedResourceError):
            pass  # EIO once the daemon closed its side, or we closed ours

    async def wait_for(self, text: str, timeout: float = 20) -> None:
        with trio.fail_after(timeout):
            while text.encode() not in self.output:
                await trio.sleep(0.05)


def _take_terminal() -> None:
    # runs in the child after setsid (start_new_session): the pty on fd 0 becomes its
    # controlling terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@asynccontextmanager
async def daemon_on_a_pty(config: Path) -> AsyncIterator[PtyDaemon]:
    master_fd, slave_fd = os.openpty()
    try:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "llama_swap_trio",
                "--config",
                str(config),
                "--listen",
                "127.0.0.1:0",
            ],
            stdin=slave_fd,
            stdout=slave_fd,
            stderr=slave_fd,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
    finally:
        os.close(slave_fd)
    daemon = PtyDaemon(process, trio.lowlevel.FdStream(master_fd))
    groups: set[int] = set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.pump)
        try:
            await daemon.wait_for("listening on http://")
            text = daemon.output.decode(errors="replace")
            daemon.url = text.split("listening on ", 1)[1].split()[0]
            yield daemon
        finally:
            groups = _descendant_groups(process.pid) - {process.pid}
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
                await process.wait()
            await daemon.master.aclose()
            nursery.cancel_scope.cancel()
    for group in groups:
        if _group_members(group):
            os.killpg(group, signal.SIGKILL)


def config_text(port: int, models: tuple[str, ...]) -> str:
    text = f"start_port = {port}\n"
    for model in models:
        text += f"[models.{model}]\ncmd = {json.dumps(fake_cmd('--model-id', model))}\n"
    return text


async def chat(url: str, model: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return await client.post("/v1/chat/completions", json=body)


async def test_closing_the_daemons_terminal_shuts_it_down_leaving_no_upstream(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(free_port(), ("a",)))
    async with daemon_on_a_pty(config) as daemon:
        assert (await chat(daemon.url, "a")).status_code == 200
        groups = _descendant_groups(daemon.process.pid) - {daemon.process.pid}
        assert groups  # the upstream runs

        # when the terminal goes away
        await daemon.master.aclose()

        # then the daemon exits by itself, cleanly, and its upstream is gone
        with trio.fail_after(20):
            code = await daemon.process.wait()
        assert code == 0
        with trio.fail_after(10):
            while any(_group_members(g) for g in groups):
                await trio.sleep(0.05)


async def test_kill_hup_reloads_a_daemon_that_has_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    port = free_port()
    config.write_text(config_text(port, ("a",)))
    async with daemon_on_a_pty(config) as daemon:
        config.write_text(config_text(port, ("a", "b")))
        # when it gets SIGHUP from kill, with its terminal still there
        daemon.process.send_signal(signal.SIGHUP)

        # then it reloads, and serves the model the file gained
        await daemon.wait_for("configuration 2 loaded")
        assert (await chat(daemon.url, "b")).status_code == 200
        assert daemon.process.returncode is None
