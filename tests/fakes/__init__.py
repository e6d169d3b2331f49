"""Helpers for tests that use the fake upstream (tests/fakes/fake_upstream.py, see its docstring).

- ``fake_cmd(*knobs)``: a ``cmd`` string for a config, with ``--port ${PORT}`` already in it.
- ``fake_argv(*knobs)``: the argv to run it yourself (add ``--port``).
- ``free_port()``: a free port below the ephemeral range, with the next few free too (for
  ``start_port``; racy by nature, so prefer port 0 where a server can report what it bound).
- ``running_fake(*knobs)``: async context manager that runs one on a free port (``--port 0``) in
  its own process group, collects its stdout/stderr lines, and kills the group on exit.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

FAKE_UPSTREAM = Path(__file__).with_name("fake_upstream.py").resolve()


def fake_argv(*knobs: str) -> list[str]:
    """The command line of the fake upstream, without ``--port``."""
    return [sys.executable, str(FAKE_UPSTREAM), *knobs]


def fake_cmd(*knobs: str) -> str:
    """A config ``cmd`` running the fake with ``--port ${PORT}`` and the given knobs.

    Knobs are shell-quoted; macros inside them (``${MODEL_ID}``) still expand, since the config
    substitutes macros in the whole string.
    """
    quoted = " ".join(shlex.quote(part) for part in fake_argv(*knobs))
    return f"{quoted} --port ${{PORT}}"


#: Ports handed out by free_port(): below Linux's ephemeral range (32768-60999), so no socket
#: bound to port 0 anywhere on the machine (test servers, outgoing connections) can take them
#: between our check and the model's start. Configs use consecutive ports from ``start_port``.
_PORT_RANGE = (20000, 32000)
_PORTS_CHECKED = 8


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port that is free now, with the next few free too (a config's ``start_port``)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if all(_bindable(port + i) for i in range(_PORTS_CHECKED)):
            return port
    raise RuntimeError("no free port range found")


class RunningFake:
    """A fake upstream started by ``running_fake``; ``lines`` grows as it prints."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _add(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("listening on 127.0.0.1:"):
            self.port = int(line.rsplit(":", 1)[1])
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_line(self, text: str, within: float = 5.0) -> str:
        """Wait until a line containing ``text`` was printed; return it."""
        with trio.fail_after(within):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                await self._changed.wait()

    async def _pump(self, stream: trio.abc.ReceiveStream) -> None:
        buf = b""
        async for data in stream:
            buf += data
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                self._add(raw.decode("utf-8", "replace"))
        if buf:
            self._add(buf.decode("utf-8", "replace"))


@asynccontextmanager
async def running_fake(*knobs: str, wait_listening: bool = True) -> AsyncIterator[RunningFake]:
    """Run the fake upstream on port 0; on exit SIGKILL its whole process group."""
    process = await trio.lowlevel.open_process(
        [*fake_argv(*knobs), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    fake = RunningFake(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(fake._pump, process.stdout)
            if wait_listening:
                await fake.wait_for_line("listening on")
            yield fake
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await process.wait()
