"""The hand-off to hypercorn: the one module that touches hypercorn's private pieces.

The front door (edge/server.py) serves plain HTTP/1.1 itself and gives every other connection
(websockets, HTTP/2 and h2c, chunked uploads, ``Expect``, HTTP/1.0, anything malformed, and every
TLS connection) to hypercorn's per-connection handler, ``hypercorn.trio.tcp_server.TCPServer``,
with the bytes it already read. What that needs from hypercorn beyond its public ``Config``:

- ``TCPServer(app, config, context, state, stream)`` and ``WorkerContext``, ``wrap_app``,
  ``ConnectionState``: the constructor hypercorn's own ``serve`` uses for each connection;
- ``TCPServer._read_data`` and ``TCPServer.idle_task``: patched by :func:`install` (below);
- ``TCPServer.protocol.protocol.connection``: the ``h11.Connection`` of an HTTP/1.1 connection,
  whose ``their_state`` says whether the client is sending a head or a body, and
  ``.protocol.keep_alive_requests``, the count of heads parsed (for the timeouts).

:func:`private_pieces_missing` checks them; tests/edge/test_handoff.py fails with its plain
message when a hypercorn release moves them (pyproject pins the range the suite proves).

Timeouts (SPEC 6.1) on a handed connection: hypercorn's ``keep_alive_timeout`` closes an idle
connection (its idle timer runs from the end of a response until the next request head is
whole), its ``ssl_handshake_timeout`` bounds the TLS handshake, and :class:`HandedStream` adds the
two hypercorn has no knob for: a head must arrive whole within ``head_timeout`` of its first byte,
and a request body may pause at most ``body_timeout`` between two reads. (hypercorn's
``read_timeout`` would apply to every read, so it would also close a quiet websocket.)

The patch: when a client closes an idle keep-alive connection, hypercorn-trio 0.18's ``_read_data``
sees EOF and returns, but the connection's task group still holds the keep-alive idle timer, so the
socket stays in CLOSE-WAIT, one file descriptor each, for ``keep_alive_timeout`` (75 s by default).
A stream of short connections then piles up descriptors until the daemon runs out (found by the
soak in tests/reliability). :func:`install` stops the idle timer once reading is over and makes
later restarts of it no-ops, so the connection closes at once. Harmless if hypercorn fixes it.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.http.asgi import ASGIApp

_MARK = "_llama_swap_trio_eof_patch"


def hypercorn_config(server: ServerConfig, graceful_timeout: float) -> HypercornConfig:
    """hypercorn's settings for the connections it is handed (and the listener's backlog and
    drain), from ``[server]``."""
    hc = HypercornConfig()
    hc.graceful_timeout = graceful_timeout
    hc.keep_alive_timeout = server.keep_alive_timeout
    hc.ssl_handshake_timeout = server.head_timeout
    hc.read_timeout = None  # per read; HandedStream applies the head and body timeouts instead
    hc.backlog = 1024  # clients beyond max_connections wait here (edge/limits.py)
    hc.accesslog = None
    hc.errorlog = logging.getLogger("llama_swap_trio.hypercorn")
    # Upstream responses carry their own; we strip theirs, so keep hypercorn's single copy.
    hc.include_server_header = False
    # No server pings: hypercorn's ping task sleeps out its interval after the websocket has
    # closed, and the graceful drain waits for it, so any websocket (a feed client, a tunnel) in
    # the last interval held every shutdown for the full graceful timeout (measured 5.3 s instead
    # of 0.3 s). A vanished feed client costs one bounded buffer until a send fails.
    hc.websocket_ping_interval = None
    return hc


class Handoff:
    """Serves handed-over connections with hypercorn: one per front door.

    Args:
        app: the ASGI app.
        config: hypercorn's settings (see :func:`hypercorn_config`).
        server: the ``[server]`` timeouts.
    """

    def __init__(self, app: ASGIApp, config: HypercornConfig, server: ServerConfig) -> None:
        install()  # closed client connections must not linger (see the module docstring)
        self.config = config
        self.server = server
        self.context = WorkerContext(None)
        self._app = wrap_app(cast(Any, app), config.wsgi_max_body_size, "asgi")

    async def begin_closing(self) -> None:
        """Close idle connections now, every other one after its current response."""
        await self.context.terminated.set()

    async def serve(self, stream: HandedStream) -> None:
        """Serve the connection ``stream`` until it closes."""
        tcp = TCPServer(
            self._app, self.config, self.context, ConnectionState({}), cast(Any, stream)
        )
        stream.attach(tcp)
        await tcp

    def plain(self, sock: trio.socket.SocketType, prefix: bytes, accepted: float) -> HandedStream:
        """The stream of a plain connection the front door read ``prefix`` from."""
        return HandedStream(trio.SocketStream(sock), prefix, self.server, accepted)

    def tls(
        self, sock: trio.socket.SocketType, context: ssl.SSLContext, accepted: float
    ) -> HandedTLSStream:
        """The stream of a TLS connection, not yet handshaken (hypercorn does that)."""
        stream = trio.SSLStream(trio.SocketStream(sock), context, server_side=True)
        return HandedTLSStream(stream, self.server, accepted)


class HandedStream(trio.abc.HalfCloseableStream):
    """A connection's stream as hypercorn reads it: first the bytes the front door already read,
    then the socket's, each read bounded by the timeout of what the client is sending (a head:
    ``head_timeout`` from its first byte; a body: ``body_timeout`` per read; otherwise none).
    No ``do_handshake``: hypercorn takes that as "not TLS"."""

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        prefix: bytes,
        server: ServerConfig,
        accepted: float,
    ) -> None:
        self._stream = stream
        self._prefix = prefix
        self._server = server
        self._tcp: TCPServer | None = None
        #: when the head being read began (the connection's accept for the first one), and how
        #: many requests hypercorn had parsed then (a higher count: that head is whole)
        self._head_began: float | None = accepted
        self._head_after = 0
        if isinstance(stream, trio.SocketStream):
            self.socket = stream.socket

    def attach(self, tcp: TCPServer) -> None:
        """The handler reading this stream: its protocol state decides the timeouts."""
        self._tcp = tcp

    def _state(self) -> tuple[object, int]:
        """The client's h11 state (None: HTTP/2, or a websocket's byte stream) and how many
        requests hypercorn has parsed on the connection."""
        protocol = getattr(getattr(self._tcp, "protocol", None), "protocol", None)
        connection = getattr(protocol, "connection", None)
        if isinstance(connection, h11.Connection):
            return connection.their_state, getattr(protocol, "keep_alive_requests", 0)
        return None, 0

    def _read_timeout(self) -> float:
        state, parsed = self._state()
        if self._head_began is not None and parsed > self._head_after:
            self._head_began = None  # that head arrived whole
        if state is h11.SEND_BODY:
            return self._server.body_timeout
        if state is h11.IDLE and self._head_began is not None:
            return self._head_began + self._server.head_timeout - trio.current_time()
        # Idle between requests (hypercorn's keep-alive timer), a response being sent, or no
        # HTTP/1.1 any more: no read timeout here.
        return math.inf

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            prefix, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return prefix
        timeout = self._read_timeout()
        # A timeout ends the connection as an EOF would (hypercorn's _read_data stops reading).
        with trio.move_on_after(max(timeout, 0)):
            data = await self._stream.receive_some(max_bytes)
            if data and self._head_began is None:
                state, parsed = self._state()
                if state is not None and state is not h11.SEND_BODY:
                    # the first bytes of the next head (maybe before hypercorn is IDLE again)
                    self._head_began, self._head_after = trio.current_time(), parsed
            return data
        raise trio.BrokenResourceError("timed out")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class HandedTLSStream(HandedStream):
    """A TLS connection as hypercorn reads it: the handshake, ALPN and the socket underneath are
    the ``trio.SSLStream``'s (hypercorn then reports ``https``/``wss`` to the app)."""

    def __init__(
        self, stream: trio.SSLStream[trio.SocketStream], server: ServerConfig, accepted: float
    ) -> None:
        super().__init__(cast(Any, stream), b"", server, accepted)
        self._tls = stream
        self.transport_stream = stream.transport_stream

    async def do_handshake(self) -> None:
        await self._tls.do_handshake()

    def selected_alpn_protocol(self) -> str | None:
        protocol: str | None = self._tls.selected_alpn_protocol()
        return protocol

    async def send_eof(self) -> None:
        raise AttributeError("TLS streams cannot half-close")  # what hypercorn expects of TLS


async def _no_idle_timeout() -> None:
    """The idle timer of a connection whose client is gone: nothing to wait for."""


def install() -> None:
    """Patch ``TCPServer._read_data`` (idempotent; see the module docstring)."""
    if getattr(TCPServer, _MARK, False):
        return
    original: Callable[[Any], Awaitable[None]] = TCPServer._read_data

    async def _read_data(self: Any) -> None:
        try:
            await original(self)
        finally:
            # Shielded and bounded: the lock is only ever held for a cancel and a nursery start.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                self._idle_timeout = _no_idle_timeout
                await self.idle_task.stop()

    setattr(TCPServer, "_read_data", _read_data)  # noqa: B010 (mypy: a method cannot be assigned)
    setattr(TCPServer, _MARK, True)


def private_pieces_missing() -> list[str]:
    """The private hypercorn pieces this module uses that the installed hypercorn lacks."""
    missing = []
    for name in ("_read_data", "_idle_timeout", "run"):
        if not callable(getattr(TCPServer, name, None)):
            missing.append(f"hypercorn.trio.tcp_server.TCPServer.{name}")
    code = TCPServer.__init__.__code__
    if code.co_varnames[: code.co_argcount] != (
        "self",
        "app",
        "config",
        "context",
        "state",
        "stream",
    ):
        missing.append("TCPServer(app, config, context, state, stream), the constructor")
    for owner, names in (
        (TCPServer, ("idle_task", "protocol")),
        (ProtocolWrapper, ("protocol",)),
        (H11Protocol, ("connection", "keep_alive_requests")),
    ):
        for name in names:
            # attributes set in __init__ (or, for TCPServer.protocol, in run)
            found = (
                owner.__init__.__code__.co_names
                + getattr(owner, "run", owner.__init__).__code__.co_names
            )
            if name not in found:
                missing.append(f"{owner.__module__}.{owner.__qualname__}.{name}")
    return missing
