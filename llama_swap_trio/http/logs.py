"""``GET /logs`` and the ``/logs/stream...`` endpoints (SPEC 3.2).

Which buffers a view reads:

- ``/logs`` and ``/logs/stream``: what ``log_to_stdout`` copies to stdout (``proxy``, ``upstream``,
  ``both`` or ``none``), so the web view matches the terminal;
- ``/logs/stream/proxy``: the proxy log; ``/logs/stream/upstream``: every model's output;
- ``/logs/stream/{model}``: one model's raw output (id or alias; ids may contain ``/``).

In views that mix several models each upstream line is prefixed with ``[model-id] `` (the
daemon's combined buffer, key ``""``, is used when present: it keeps arrival order); a one-model
view is raw. A stream sends the backlog first (unless the query has ``no-history``,
any value), then live lines until the client leaves or the buffers close at shutdown. Writers never
wait for a reader: a reader that falls behind loses lines and reads a notice of how many.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.edge.disconnect import cancel_when_client_leaves
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.errors import send_text
from llama_swap_trio.logbuffer import LogBuffer, LogReader

STREAM_PREFIX = "/logs/stream/"

_STREAM_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-accel-buffering", b"no"),
]

#: key of ``upstream_logs`` under which the daemon may keep one buffer of every model's output,
#: its lines already prefixed with ``[model-id] `` and in arrival order; without it the views merge
#: the per-model buffers themselves
COMBINED = ""

#: a (line prefix, buffer) pair: one source of a log view
Source = tuple[str, LogBuffer]


class LogViews:
    """The log buffers of the daemon, and which of them each endpoint shows."""

    def __init__(self, config: Config, proxy: LogBuffer, upstream: Mapping[str, LogBuffer]) -> None:
        self._config = config
        self._proxy = proxy
        self._upstream = upstream

    def _all_upstreams(self) -> list[Source]:
        combined = self._upstream.get(COMBINED)
        if combined is not None:
            return [("", combined)]
        return [(f"[{model_id}] ", self._upstream[model_id]) for model_id in sorted(self._upstream)]

    def sources(self, name: str) -> list[Source]:
        """The sources of view ``name`` ("" = the stdout view).

        Raises:
            ProxyError: 404 ``model_not_found`` for a name that is no view and no model.
        """
        if name == "":
            mode = self._config.log_to_stdout
            picked: list[Source] = []
            if mode in ("proxy", "both"):
                picked.append(("", self._proxy))
            if mode in ("upstream", "both"):
                picked.extend(self._all_upstreams())
            return picked
        if name == "proxy":
            return [("", self._proxy)]
        if name == "upstream":
            return self._all_upstreams()
        model = self._config.resolve(name)
        if model is None:
            raise errors.model_not_found(name)
        buffer = self._upstream.get(model.id)
        # a configured model without a buffer yet has printed nothing: an empty view, not a 404
        return [("", buffer if buffer is not None else LogBuffer())]

    async def send_backlog(self, send: Send) -> None:
        """``GET /logs``: the stdout view's backlog as one text/plain response."""
        text = "".join(
            "".join(f"{prefix}{line}\n" for line in buffer.lines())
            for prefix, buffer in self.sources("")
        )
        await send_text(send, 200, text)

    async def stream(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """A ``/logs/stream`` response for view ``name`` (resolved before the head is sent)."""
        sources = self.sources(name)
        history = b"no-history" not in scope.get("query_string", b"")
        readers = [(prefix, buffer.reader(history=history)) for prefix, buffer in sources]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
            await _pump(readers, receive, send)
        finally:
            for _, reader in readers:
                reader.close()


async def _pump(readers: list[tuple[str, LogReader]], receive: Receive, send: Send) -> None:
    """Send what the readers yield until the client leaves (or every reader ends)."""
    chunks_in, chunks_out = trio.open_memory_channel[bytes](0)

    async def read_one(prefix: str, reader: LogReader, out: trio.MemorySendChannel[bytes]) -> None:
        async with out:
            while True:
                try:
                    lines, dropped = await reader.read()
                except trio.EndOfChannel:
                    return
                text = "".join(f"{prefix}{line}\n" for line in lines)
                if dropped:
                    text = (
                        f"{prefix}[... {dropped} lines dropped: this reader was too slow]\n" + text
                    )
                # blocks while the client is slow: the reader then drops lines; writers never wait
                await out.send(text.encode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_client_leaves, receive, nursery.cancel_scope)
        async with chunks_in:
            for prefix, reader in readers:
                nursery.start_soon(read_one, prefix, reader, chunks_in.clone())
        if readers:
            async with chunks_out:
                async for chunk in chunks_out:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # every buffer closed (shutdown): end the response cleanly
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
