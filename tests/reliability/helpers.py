"""Helpers for the reliability tests: configs of fake models, leak probes, raw HTTP."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import httpx
import trio

from tests.e2e.conftest import Daemon, _descendant_groups
from tests.fakes import fake_cmd, free_port

#: the environment that turns on ``GET /debug/state`` in the daemon under test
DEBUG_ENV = {"LLAMA_SWAP_TRIO_DEBUG": "1"}


def models_config(
    models: dict[str, tuple[str, ...]], *, extra: str = "", model_extra: str = ""
) -> str:
    """A config with one fake upstream per entry (model id -> fake knobs)."""
    parts = [f"health_check_timeout = 30\nstart_port = {free_port()}\n{extra}\n"]
    for model_id, knobs in models.items():
        parts.append(
            f'[models."{model_id}"]\n'
            f"cmd = {json.dumps(fake_cmd('--model-id', model_id, *knobs))}\n{model_extra}\n"
        )
    return "".join(parts)


def chat(model: str, *, stream: bool = False, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        **extra,
    }


async def debug_state(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/debug/state")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def wait_quiet(client: httpx.AsyncClient, within: float = 10.0) -> dict[str, Any]:
    """Poll the debug state until no request is in flight or queued; return that state."""
    with trio.fail_after(within):
        while True:
            state = await debug_state(client)
            if not state["queue"] and all(m["in_flight"] == 0 for m in state["models"]):
                return state
            await trio.sleep(0.05)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def upstream_groups(daemon: Daemon) -> set[int]:
    """Process groups of the daemon's live descendants that run a fake upstream (the daemon's
    watchdog child is not an upstream)."""
    found = set()
    for group in _descendant_groups(daemon.process.pid) - {daemon.process.pid}:
        try:
            with open(f"/proc/{group}/cmdline", "rb") as f:
                if b"fake_upstream" in f.read():
                    found.add(group)
        except OSError:
            found.add(group)  # its leader is gone but the group lives on: count it
    return found


def fd_targets(pid: int) -> list[str]:
    """What each fd of ``pid`` points at (for leak reports)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(targets)


def raw_request(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; return everything the server sends until it closes
    or one complete response (by Content-Length) arrived. Raises TimeoutError on a hang."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                lengths = [
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if lengths and len(body) >= int(lengths[0]):
                    return out


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def sockets_of(pid: int) -> list[str]:
    """``ss`` lines of the TCP sockets ``pid`` holds (for leak reports)."""
    import subprocess

    out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, check=False).stdout
    return [" ".join(line.split()[:5]) for line in out.splitlines() if f"pid={pid}," in line]
