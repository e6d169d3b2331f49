"""Small helpers for the upstream tests: models, fake servers, waiting on conditions."""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.upstream import procfs
from llama_swap_trio.upstream.api import StateChanged, UpstreamEvent, UpstreamState
from llama_swap_trio.upstream.guard import ProcessGuard
from llama_swap_trio.upstream.upstream import Upstream

FAKE = str(Path(__file__).resolve().parent.parent / "fakes" / "fake_upstream.py")
PY = sys.executable


def free_port() -> int:
    """A port that was free a moment ago (bound on 127.0.0.1 port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_argv(port: int, *knobs: str) -> tuple[str, ...]:
    return (PY, FAKE, "--port", str(port), *knobs)


def make_model(
    argv: Sequence[str],
    *,
    port: int | None = None,
    model_id: str = "m",
    check_endpoint: str = "/health",
    ttl: int = 0,
    unload_timeout: int = 5,
    cmd_stop: str = "",
    env: Mapping[str, str] | None = None,
    proxy_port: int | None = None,
) -> ModelConfig:
    target = port if proxy_port is None else proxy_port
    return ModelConfig(
        id=model_id,
        argv=tuple(argv),
        cmd=shlex.join(argv),
        cmd_stop=cmd_stop,
        proxy=f"http://127.0.0.1:{target if target is not None else 9}",
        port=port,
        check_endpoint=check_endpoint,
        ttl=ttl,
        unload_timeout=unload_timeout,
        aliases=(),
        env=dict(env or {}),
    )


@attrs.define
class Harness:
    upstream: Upstream
    events: list[UpstreamEvent]
    logs: LogBuffer

    def states(self) -> list[UpstreamState]:
        return [e.state for e in self.events if isinstance(e, StateChanged)]


async def open_upstream(
    nursery: trio.Nursery,
    model: ModelConfig,
    *,
    health_check_timeout: float = 20.0,
    guard: ProcessGuard | None = None,
    logs: LogBuffer | None = None,
) -> Harness:
    events: list[UpstreamEvent] = []
    buffer = logs if logs is not None else LogBuffer()
    upstream = Upstream(
        model,
        health_check_timeout=health_check_timeout,
        notify=events.append,
        logs=buffer,
        guard=guard,
    )
    await nursery.start(upstream.run)
    return Harness(upstream, events, buffer)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def group_gone(pgid: int) -> bool:
    return not procfs.group_members(pgid)
