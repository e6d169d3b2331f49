"""End-to-end fixtures: the real daemon as a subprocess, with real fake-upstream processes.

``start_daemon(config_text)`` writes the config to a temporary directory, runs
``python -m llama_swap_trio serve --listen 127.0.0.1:0`` in its own process group, waits for its
``listening on http://...`` line and returns a :class:`Daemon`. At the end of the test every daemon
still running gets SIGTERM (then SIGKILL), and every process group it started must be gone: the
fixture fails the test if an upstream was left behind.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio

from tests.fakes import fake_cmd

__all__ = ["Daemon", "fake_cmd"]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry))
    return members


def proc_table() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (ppid, pgid, cmdline) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), cmdline)
    return table


def _descendant_groups(root_pid: int) -> set[int]:
    """Process groups of every live descendant of ``root_pid`` (found through /proc)."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid, pgrp = int(entry), int(fields[1]), int(fields[2])
        children.setdefault(ppid, []).append(pid)
        groups[pid] = pgrp
    found: set[int] = set()
    stack = list(children.get(root_pid, []))
    while stack:
        pid = stack.pop()
        found.add(groups[pid])
        stack.extend(children.get(pid, []))
    return found


class Daemon:
    def __init__(self, process: trio.Process, config_path: Path) -> None:
        self.process = process
        self.config_path = config_path
        self.lines: list[str] = []
        self.url = ""
        self.upstream_groups: set[int] = set()
        self._changed = trio.Event()

    def _add(self, line: str) -> None:
        self.lines.append(line)
        if "listening on http" in line and not self.url:  # http:// or https://
            self.url = line.split("listening on ", 1)[1].strip()
        self._changed.set()
        self._changed = trio.Event()

    async def _pump(self, stream: trio.abc.ReceiveStream) -> None:
        buf = b""
        async for data in stream:
            buf += data
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                self._add(raw.decode("utf-8", "replace"))

    async def wait_for_line(self, text: str, timeout: float = 10.0) -> str:
        with trio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                await self._changed.wait()

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, trust_env=False, **kwargs)  # type: ignore[arg-type]

    def note_upstreams(self) -> set[int]:
        """Remember the process groups of the daemon's current upstreams (checked at the end)."""
        groups = _descendant_groups(self.process.pid) - {self.process.pid}
        self.upstream_groups |= groups
        return groups

    def live_upstream_groups(self) -> set[int]:
        return {g for g in self.upstream_groups if _group_members(g)}

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


StartDaemon = Callable[..., Awaitable[Daemon]]


async def _wait_groups_gone(groups: set[int], timeout: float) -> set[int]:
    with trio.move_on_after(timeout):
        while any(_group_members(g) for g in groups):
            await trio.sleep(0.02)
    return {g for g in groups if _group_members(g)}


@pytest.fixture
async def start_daemon(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[StartDaemon]:
    daemons: list[Daemon] = []

    async def start(
        config_text: str,
        *extra_args: str,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> Daemon:
        """Start a daemon; ``nofile`` lowers its RLIMIT_NOFILE (soft and hard)."""

        def limit_fds() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        config_path = tmp_path / f"config{len(daemons)}.toml"
        config_path.write_text(config_text)
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "llama_swap_trio",
                "serve",
                "--config",
                str(config_path),
                "--listen",
                "127.0.0.1:0",
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            preexec_fn=limit_fds if nofile is not None else None,
        )
        daemon = Daemon(process, config_path)
        daemons.append(daemon)
        assert process.stdout is not None
        nursery.start_soon(daemon._pump, process.stdout)
        try:
            await daemon.wait_for_line("listening on http")
        except trio.TooSlowError:
            raise AssertionError("daemon did not start:\n" + "\n".join(daemon.lines)) from None
        return daemon

    yield start

    leftovers: set[int] = set()
    for daemon in daemons:
        if daemon.process.returncode is None:
            daemon.note_upstreams()
            daemon.signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await daemon.process.wait()
            if daemon.process.returncode is None:
                os.killpg(daemon.process.pid, signal.SIGKILL)
                await daemon.process.wait()
        leftovers |= await _wait_groups_gone(daemon.upstream_groups, 5)
    for group in leftovers:
        os.killpg(group, signal.SIGKILL)
    assert not leftovers, f"upstream process groups left behind: {leftovers}"
