"""Test kit for the ASGI app: configs, a fake router, a fake forward, a real server on port 0."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from llama_swap_trio.config.model import (
    DEFAULT_IGNORE_PATHS,
    Config,
    Filters,
    ModelConfig,
    RoutingConfig,
)
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.http.forward import ForwardResult
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.routing.api import (
    CancelWait,
    Grant,
    ModelStatus,
    Progress,
    ProgressCallback,
    QueueEntry,
    RouterSnapshot,
    WaitCancelled,
)
from llama_swap_trio.upstream.api import UpstreamState


def model(model_id: str, **kw: Any) -> ModelConfig:
    """A resolved model with test defaults; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "id": model_id,
        "argv": ("server", "--port", "5800"),
        "cmd": "server --port 5800",
        "cmd_stop": "",
        "proxy": "http://127.0.0.1:5800",
        "port": 5800,
        "check_endpoint": "/health",
        "ttl": 0,
        "unload_timeout": 10,
        "aliases": (),
        "env": {},
    }
    fields.update(kw)
    return ModelConfig(**fields)


def config(*models: ModelConfig, **kw: Any) -> Config:
    """A resolved config holding ``models`` (aliases from each model's ``all_aliases``)."""
    aliases = {alias: m.id for m in models for alias in m.all_aliases}
    kw.setdefault("ignore_paths", tuple(re.compile(p) for p in DEFAULT_IGNORE_PATHS))
    return Config(
        path="test.toml",
        models={m.id: m for m in models},
        aliases=aliases,
        routing=RoutingConfig(),
        **kw,
    )


def filters(**kw: Any) -> Filters:
    return Filters(**kw)


@attrs.define
class FakeUpstream:
    model: ModelConfig
    state: UpstreamState = UpstreamState.STOPPED
    generation: int = 0

    async def start(self) -> None:  # pragma: no cover - the fake router never calls it
        self.state = UpstreamState.READY

    async def stop(self) -> None:  # pragma: no cover
        self.state = UpstreamState.STOPPED

    def set_in_flight(self, count: int) -> None:  # pragma: no cover
        pass

    def rearm_idle(self) -> None:  # pragma: no cover
        pass


class FakeRouter:
    """A RouterLike whose answers tests set: errors per model, a gate to hold requests waiting."""

    def __init__(self, cfg: Config) -> None:
        self.config = cfg
        self.upstreams = {mid: FakeUpstream(m) for mid, m in cfg.models.items()}
        self.errors: dict[str, ProxyError] = {}
        #: when set, ``serve`` waits on it before granting
        self.gate: trio.Event | None = None
        self.serve_calls: list[tuple[str, bool]] = []
        self.waiting = 0
        self.cancelled_waits = 0
        self.in_flight: dict[str, int] = {}
        self.loads: list[str] = []
        self.unloads: list[str | None] = []
        self.queue: tuple[QueueEntry, ...] = ()

    def set_state(self, model_id: str, state: UpstreamState) -> None:
        self.upstreams[model_id].state = state

    @asynccontextmanager
    async def serve(
        self,
        model_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        require_ready: bool = False,
        cancel_wait: CancelWait | None = None,
    ) -> AsyncIterator[Grant]:
        self.serve_calls.append((model_id, require_ready))
        upstream = self.upstreams[model_id]
        if require_ready and upstream.state != UpstreamState.READY:
            raise ProxyError(
                409, "invalid_request_error", "model_not_loaded", f"model '{model_id}' not loaded"
            )
        if model_id in self.errors:
            raise self.errors[model_id]
        if self.gate is not None:
            self.waiting += 1
            try:
                with cancel_wait() if cancel_wait is not None else trio.CancelScope() as waiting:
                    await self.gate.wait()
                if waiting.cancelled_caught:  # as the router: the wait is withdrawn
                    self.cancelled_waits += 1
                    raise WaitCancelled
            except trio.Cancelled:
                self.cancelled_waits += 1
                raise
            finally:
                self.waiting -= 1
        upstream.state = UpstreamState.READY
        self.in_flight[model_id] = self.in_flight.get(model_id, 0) + 1
        if on_progress is not None:
            on_progress(Progress("ready"))  # as the router does with every grant
        try:
            yield Grant(model=upstream.model, upstream=upstream)
        finally:
            self.in_flight[model_id] -= 1

    async def load(self, model_id: str, *, force: bool = False) -> None:
        if model_id in self.errors:
            raise self.errors[model_id]
        self.loads.append(model_id)
        self.upstreams[model_id].state = UpstreamState.READY

    async def unload(self, model_id: str | None = None) -> list[str]:
        self.unloads.append(model_id)
        stopped = []
        for mid, upstream in sorted(self.upstreams.items()):
            if model_id in (None, mid) and upstream.state != UpstreamState.STOPPED:
                upstream.state = UpstreamState.STOPPED
                stopped.append(mid)
        return stopped

    def snapshot(self) -> RouterSnapshot:
        return RouterSnapshot(
            models=tuple(
                ModelStatus(mid, u.state, self.in_flight.get(mid, 0))
                for mid, u in sorted(self.upstreams.items())
            ),
            queue=self.queue,
        )

    def upstream(self, model_id: str) -> FakeUpstream:
        return self.upstreams[model_id]


@attrs.define
class ForwardCall:
    model: str
    path: str
    target: str | None
    body: bytes
    headers: list[tuple[bytes, bytes]]


class FakeForward:
    """Stands in for ``forward_http``: records the call and answers a JSON echo of it."""

    def __init__(self) -> None:
        self.calls: list[ForwardCall] = []
        self.result = ForwardResult(
            status=200,
            ttfb_ms=1.5,
            duration_ms=3.25,
            prompt_tokens=7,
            completion_tokens=9,
            tokens_per_second=12.5,
        )
        #: when set, the fake waits on it (cancelled by the watch when the client leaves)
        self.hold: trio.Event | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any, **kw: Any) -> ForwardResult:
        grant: Grant = kw["grant"]
        body: bytes = kw["body"]
        self.calls.append(
            ForwardCall(
                grant.model.id, scope["path"], kw.get("target"), body, list(scope["headers"])
            )
        )
        if self.hold is not None:
            with kw["watch"].cancel_on_disconnect() as cancel_scope:
                await self.hold.wait()
            if cancel_scope.cancelled_caught:
                return attrs.evolve(self.result, status=499, client_disconnected=True)
        echo = json.dumps({"model": grant.model.id, "body": body.decode("utf-8", "replace")})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": echo.encode(), "more_body": False})
        return self.result


@attrs.define
class Daemonish:
    """What ``create_app`` needs besides the config and router."""

    bus: EventBus = attrs.field(factory=EventBus)
    proxy_logs: LogBuffer = attrs.field(factory=LogBuffer)
    upstream_logs: Mapping[str, LogBuffer] = attrs.field(factory=dict)
    stopping: bool = False
    #: the harness serves on 127.0.0.1, so the app's Host rule is on, as in the daemon
    listen_host: str | None = "127.0.0.1"

    def shutting_down(self) -> bool:
        return self.stopping


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn on 127.0.0.1:0; yield its base URL."""
    cfg = HyperConfig()
    cfg.bind = ["127.0.0.1:0"]
    cfg.graceful_timeout = 0.5
    cfg.accesslog = None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, cfg, shutdown_trigger=shutdown.wait))
        try:
            yield binds[0]
        finally:
            shutdown.set()


@attrs.define
class Harness:
    url: str
    client: Any  # httpx.AsyncClient
    router: FakeRouter
    forward: FakeForward
    kit: Daemonish


@asynccontextmanager
async def harness(
    cfg: Config, monkeypatch: Any, kit: Daemonish | None = None
) -> AsyncIterator[Harness]:
    """The app on a real server with a fake router and a fake ``forward_http``."""
    import httpx

    from llama_swap_trio.http import app as app_module

    router = FakeRouter(cfg)
    forward = FakeForward()
    kit = kit or Daemonish()
    monkeypatch.setattr(app_module, "forward_http", forward)
    app = app_module.create_app(
        cfg,
        router,
        pool=None,  # type: ignore[arg-type]  # only the (fake) forward uses it
        bus=kit.bus,
        proxy_logs=kit.proxy_logs,
        upstream_logs=kit.upstream_logs,
        shutting_down=kit.shutting_down,
        listen_host=kit.listen_host,
    )
    async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        yield Harness(url, client, router, forward, kit)


class StreamReader:
    """A raw HTTP/1.1 client for endless responses (httpx leaks async generators when a test
    stops reading a stream midway, which ``filterwarnings = error`` turns into failures)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._pending = b""
        self.status = 0
        self.headers: dict[str, str] = {}

    async def _more(self) -> bool:
        chunk = await self._stream.receive_some()
        self._pending += chunk
        return bool(chunk)

    async def read_head(self) -> None:
        with trio.fail_after(5):
            while b"\r\n\r\n" not in self._pending:
                if not await self._more():
                    raise AssertionError("connection closed before the response head")
        head, self._pending = self._pending.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def until(self, wanted: str) -> str:
        """Raw body bytes (chunk framing included) up to and including ``wanted``."""
        needle = wanted.encode()
        with trio.fail_after(5):
            while needle not in self._pending:
                if not await self._more():
                    raise AssertionError(f"stream ended before {wanted!r}: {self._pending!r}")
        cut = self._pending.index(needle) + len(needle)
        text, self._pending = self._pending[:cut], self._pending[cut:]
        return text.decode()


@asynccontextmanager
async def streaming(base_url: str, path: str, headers: str = "") -> AsyncIterator[StreamReader]:
    """GET ``path`` on a raw connection; yield a reader positioned after the response head."""
    host, port = base_url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{headers}\r\n"
        await stream.send_all(request.encode())
        reader = StreamReader(stream)
        await reader.read_head()
        yield reader
