"""The loading-state stream (SPEC 3.4; llama-swap-features 3.7).

A streaming chat completion for a model that is not ready gets its 200 ``text/event-stream`` head
as soon as the router has taken the request in (its first progress notice: queued or loading;
at the latest after one :data:`TICK`); while the router loads the model, progress is sent as
OpenAI chunks whose delta is ``reasoning_content`` (clients show it as "thinking"), then the
upstream's own stream continues in the same response. A failed load ends the stream with
``data: {"error": ...}`` and ``data: [DONE]``.

A request the router refuses outright (429 ``concurrency_limit``, 503 ``shutting_down``) is
refused before any progress, so it gets that plain error, ``Retry-After`` and all, before any
stream (SPEC 3.3/3.4): :func:`serve_with_loading_state` raises it for the app to answer.

Tasks: the request's edge watches the client (edge/contract.py: the front door's own watch, or
a watcher task on ``receive()``; it cancels the wait, so the router drops the request from its
queue) and a reporter that is the *only* writer while the wait lasts. When the grant arrives
the reporter writes its last line and exits before the edge relays the upstream's bytes
(``Edge.relay``), so progress text and the model's output never interleave.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING

import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.edge.contract import open_edge
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.forward import (
    CLIENT_CLOSED,
    ForwardResult,
    forward_http,
    send_sse_error_and_done,
)
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.routing.api import Progress, ProgressCallback, RouterLike

if TYPE_CHECKING:
    from llama_swap_trio.observe.requests import RequestLife

log = logging.getLogger(__name__)

#: seconds between elapsed-time lines
TICK = 1.0
#: progress notices buffered for the reporter; the router never blocks on a slow client
PROGRESS_BUFFER = 32

SSE_HEAD_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class _Reporter:
    """Writes progress chunks while the request waits for its model."""

    def __init__(
        self,
        send: Send,
        model: ModelConfig,
        requested_name: str,
        also: ProgressCallback | None = None,
    ) -> None:
        self._send = send
        self._also = also
        self._model = model
        self._requested = requested_name
        self._id = "chatcmpl-loading-" + secrets.token_hex(8)
        self._created = int(time.time())
        self.start = trio.current_time()
        self.load_seconds: float | None = None
        self._progress_in, self._progress_out = trio.open_memory_channel[Progress](PROGRESS_BUFFER)
        self._stopped = trio.Event()
        self._last_position = 0
        #: whether the 200 SSE head went out (after it, errors can only be stream events)
        self.head_sent = False

    def on_progress(self, progress: Progress) -> None:
        """Called synchronously by the router: never blocks, drops notices when full."""
        if self._also is not None:
            self._also(progress)
        if progress.kind == "ready":
            self.load_seconds = progress.load_seconds
            return
        try:
            self._progress_in.send_nowait(progress)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the reporter is behind or gone; progress text is informative only

    async def emit(self, text: str) -> None:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._requested,
            "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}],
        }
        data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def send_head(self) -> None:
        """The 200 SSE head and the first progress line, once."""
        if self.head_sent:
            return
        self.head_sent = True
        await self._send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEAD_HEADERS}
        )
        await self.emit(f"Loading model {self._requested}...\n")

    async def run(self) -> None:
        """Emit the head, progress notices and the elapsed time until :meth:`finish` is called.

        The head waits for the router's first notice (a refusal comes without one), or one
        :data:`TICK` at most. Sends happen outside the timeout scopes: a deadline never cuts a
        chunk short.
        """
        try:
            progress: Progress | None = None
            with trio.move_on_at(self.start + TICK):
                try:
                    progress = await self._progress_out.receive()
                except trio.EndOfChannel:
                    return  # finish() was called: granted or refused before any notice
            await self.send_head()
            if progress is not None and (text := self._describe(progress)):
                await self.emit(text)
            ticks = 1
            while True:
                progress = None
                with trio.move_on_at(self.start + ticks * TICK):
                    try:
                        progress = await self._progress_out.receive()
                    except trio.EndOfChannel:
                        return  # finish() was called
                if progress is None:
                    ticks += 1
                    elapsed = math.floor(trio.current_time() - self.start)
                    await self.emit(f"{elapsed}s elapsed\n")
                elif text := self._describe(progress):
                    await self.emit(text)
        finally:
            self._stopped.set()

    def _describe(self, progress: Progress) -> str:
        if progress.kind == "queued":
            if progress.position == self._last_position:
                return ""
            self._last_position = progress.position
            return f"Waiting in queue, position #{progress.position}\n"
        lines: list[str] = []
        if progress.evict:
            lines.append(f"Stopping {', '.join(progress.evict)}\n")
        lines.append(f"Starting {self._model.id}\n")
        return "".join(lines)

    async def finish(self) -> None:
        """Stop the reporter and wait until it wrote its last chunk. Idempotent."""
        self._progress_in.close()  # the reporter drains what is buffered, then stops
        await self._stopped.wait()

    async def emit_ready(self) -> None:
        seconds = self.load_seconds or (trio.current_time() - self.start)
        await self.emit(f"Model {self._model.id} ready after {seconds:.2f}s\n\n")


async def serve_with_loading_state(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    router: RouterLike,
    model: ModelConfig,
    requested_name: str,
    body: bytes,
    pool: ClientPool,
    target: str | None = None,
    life: RequestLife | None = None,
) -> ForwardResult:
    """Answer a streaming chat completion for a model that is not ready yet (SPEC 3.4).

    Sends the 200 SSE head once the router has taken the request in, progress chunks while
    ``router.serve`` waits, then the upstream's stream in the same response. The caller must not
    have sent anything yet and must not read ``receive`` concurrently. ``life``, the request's
    feed record, sees the router's progress and the relay's accounting.

    Returns:
        How it ended. A failed load (or a forwarding error before the upstream answered) gives
        the error's status with ``upstream_failed=True``; the client got the error event. A client
        that left while waiting gives ``CLIENT_CLOSED`` with ``client_disconnected=True``.

    Raises:
        ProxyError: the router refused the request before the head went out (429, 503); nothing
            was sent, the caller answers it.
    """
    start = trio.current_time()
    reporter = _Reporter(send, model, requested_name, life.on_progress if life else None)
    result: ForwardResult | None = None
    failure: ProxyError | None = None
    async with open_edge(scope, receive, send) as edge:
        watch = edge.watch
        with watch.cancel_on_disconnect() as waiting:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reporter.run)
                try:
                    async with router.serve(model.id, on_progress=reporter.on_progress) as grant:
                        # From here on a disconnect is forward_http's to notice (it reports it in
                        # its result); the end of a relayed response also looks like one.
                        watch.release(waiting)
                        await reporter.finish()
                        await reporter.send_head()
                        await reporter.emit_ready()
                        result = await forward_http(
                            scope,
                            receive,
                            send,
                            grant=grant,
                            body=body,
                            pool=pool,
                            target=target,
                            headers_sent=True,
                            edge=edge,
                            life=life,
                        )
                except ProxyError as exc:
                    failure = exc
                    await reporter.finish()
                    log.info("%s: loading-state request failed: %s", model.id, exc.message)
                    if reporter.head_sent:
                        await send_sse_error_and_done(send, exc.body()["error"])
    if result is not None:
        return result
    if failure is not None and not reporter.head_sent:
        raise failure
    duration_ms = (trio.current_time() - start) * 1000
    if failure is not None:
        return ForwardResult(
            status=failure.status,
            ttfb_ms=None,
            duration_ms=duration_ms,
            upstream_failed=True,
            error=failure.code,
        )
    return ForwardResult(
        status=CLIENT_CLOSED, ttfb_ms=None, duration_ms=duration_ms, client_disconnected=True
    )
