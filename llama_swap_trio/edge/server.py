"""The front door: a lean HTTP/1.1 server for plain requests, hypercorn for everything else.

Why: measured on the 2-core machine (benchmarks/RESULTS.md), hypercorn's HTTP/1.1 path alone, with
an app that only says hello, cost 0.65-1.0 ms of CPU per request and ~150 us per streamed event
(an ASGI message, a lock, a shielded cancel scope, h11 framing, then the write), which is above
the proxy's whole budget (0.6 ms per request, 60 us per event). The requests a model-swapping
proxy lives on are plain: HTTP/1.1, a ``Content-Length`` body or none, a JSON or SSE answer.

So each accepted connection starts here. While its request heads are plain (:mod:`.wire` decides)
they are served by :class:`_Exchange`, a small ASGI server: the same app, the same scope hypercorn
builds, the same ``http.disconnect`` rules. The first head that is not plain (a websocket upgrade,
a chunked upload, ``Expect``, HTTP/1.0, anything malformed) hands the connection, with every byte
already read, to hypercorn's own connection handler for the rest of its life (edge/handoff.py).
Nothing is refused here: refusing stays hypercorn's (h11's) job, so the edge cases keep their
tested answers. With TLS on (edge/tls.py), every connection goes to hypercorn once accepted: the
plain path below stays free of TLS.

``[server]`` (SPEC 6.1) holds here as in the hand-off: the first head must arrive whole within
``head_timeout`` of the accept, a later one within ``head_timeout`` of its first byte; a request
body may pause at most ``body_timeout``; a connection idle between requests closes after
``keep_alive_timeout``. The accept loop serves at most ``max_connections`` connections
(edge/limits.py): beyond it clients wait in the backlog and idle keep-alive connections are
closed first.

Per connection, a reader task reads the socket all along (:class:`_Connection`), so a client's
leaving is noticed without a task per request. Each exchange is the request's
:class:`~.contract.Edge` (``scope["extensions"][EDGE_EXTENSION]``): its
:class:`~.disconnect.ClientWatch` is fired by the reader, and its ``relay`` hands the rest of an
upstream body to the relay hub (:mod:`.relay_hub`).

Semantics kept from hypercorn, which the app relies on:

- ``send()`` never raises because the client went away; the disconnect shows as
  ``http.disconnect`` from ``receive()`` once the body has been read, and after the response
  is complete.
- An app that returns before finishing its response leaves it truncated and the connection is
  closed (the client sees an incomplete body, never a complete-looking one); one that returns
  without starting a response gets a 500, unless the client left (a body cut short by a
  half-close included: the connection is closed without an answer).
- A ``date`` header on every response, no ``server`` header.

Writes: a response with a ``Content-Length`` goes out with its head and first body bytes in one
write; one without is chunked, its head written at once (a stream's client sees the status before
the first token). A write the app's cancellation interrupts leaves the connection closed, since
its framing can no longer be trusted.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote
from wsgiref.handlers import format_date_time

import trio
from hypercorn.config import Config as HypercornConfig

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.edge import sockio
from llama_swap_trio.edge.asgi_edge import relay_chunks
from llama_swap_trio.edge.contract import EDGE_EXTENSION, Edge
from llama_swap_trio.edge.disconnect import ClientWatch
from llama_swap_trio.edge.handoff import Handoff
from llama_swap_trio.edge.limits import AcceptTrouble, ConnectionSlots, derived_max_connections
from llama_swap_trio.edge.listen import open_listeners
from llama_swap_trio.edge.relay_hub import CLIENT_GONE, DONE, Relay, RelayHub
from llama_swap_trio.edge.upstream_client import UpstreamResponse
from llama_swap_trio.edge.wire import MAX_HEAD, RequestHead, parse_request_head
from llama_swap_trio.http.asgi import ASGIApp, Message

log = logging.getLogger(__name__)

READ_SIZE = sockio.READ_SIZE
#: an unread request body up to this size is skipped to keep the connection; a larger one closes it
MAX_DRAIN = 64 * 1024
#: bytes read ahead of the app (a pipelined request, the rest of a large body) before reading pauses
READ_AHEAD = 64 * 1024
#: seconds a closing connection waits for the client's own close (see ``_Connection._linger``)
LINGER_SECONDS = 2.0

_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
_DISCONNECT: Message = {"type": "http.disconnect"}
_NETWORK_ERRORS = sockio.NETWORK_ERRORS
#: accept() errors of exhausted resources: wait a little, like trio.serve_listeners; every other
#: accept() error concerns one connection (reset, timed out, unreachable before we took it) and
#: is skipped, as trio.SocketListener does
_ACCEPT_PAUSE = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class FrontDoor:
    """Shared state of every connection: the app, hypercorn's handler for the hand-offs, the
    ``[server]`` timeouts and connection limit, closing.

    Args:
        app: the ASGI app served both here and by hypercorn.
        hypercorn_config: hypercorn's settings (edge/handoff.py ``hypercorn_config``).
        server: the ``[server]`` settings (timeouts, ``max_connections``).
        tls: the TLS context when the listener serves HTTPS (every connection then goes to
            hypercorn after the front door accepted it).
    """

    def __init__(
        self,
        app: ASGIApp,
        hypercorn_config: HypercornConfig,
        server: ServerConfig,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.handoff = Handoff(app, hypercorn_config, server)
        self.tls = tls
        self.head_timeout = server.head_timeout
        self.body_timeout = server.body_timeout
        self.keep_alive_timeout = server.keep_alive_timeout
        self.slots = ConnectionSlots(server.max_connections or derived_max_connections())
        self.closing = False
        #: relays streamed bodies for every connection (relay_hub.py); run by ``serve``
        self.hub = RelayHub()
        #: cancel scopes of connections waiting for (more of) a request, cancelled when closing
        self.idle: set[trio.CancelScope] = set()
        #: connections idle between two requests, oldest first, with the trio time each went
        #: idle: closed by ``reap_idle`` after ``keep_alive_timeout``, and first when a new
        #: client waits for a free slot. One reaper task instead of a timeout scope per wait:
        #: entering and leaving a cancel scope was 5 % of a small request's CPU.
        self.keep_alive: dict[_Connection, float] = {}
        self._went_idle = trio.Event()
        self._date = b""
        self._date_second = -1

    def date(self) -> bytes:
        """The ``date`` header value, formatted once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = format_date_time(now).encode("ascii")
        return self._date

    async def begin_closing(self) -> None:
        """Close idle connections now and every other one after its current response."""
        self.closing = True
        for scope in self.idle:
            scope.cancel()
        for connection in tuple(self.keep_alive):
            connection.close_idle()
        await self.handoff.begin_closing()  # hypercorn's connections do the same

    def close_one_idle(self) -> None:
        """Close the oldest connection idle between requests, if any (to free a slot)."""
        for connection in self.keep_alive:
            del self.keep_alive[connection]
            connection.close_idle()
            return

    def idle_since(self, connection: _Connection) -> None:
        """``connection`` waits for its next request from now on (until it leaves the dict)."""
        self.keep_alive[connection] = trio.current_time()
        if len(self.keep_alive) == 1:
            self._went_idle.set()

    async def reap_idle(self) -> None:
        """Close each connection idle between requests for ``keep_alive_timeout`` (until
        cancelled). Sleeps until the oldest one's time is up; connections that became busy
        meanwhile have left the dict, so a wake-up may find nothing to close yet."""
        while True:
            if not self.keep_alive:
                self._went_idle = trio.Event()
                await self._went_idle.wait()
                continue
            oldest, since = next(iter(self.keep_alive.items()))
            await trio.sleep_until(since + self.keep_alive_timeout)
            if self.keep_alive.get(oldest) == since:
                del self.keep_alive[oldest]
                oldest.close_idle()

    async def handle(self, sock: socket.socket) -> None:
        """Serve one accepted connection (a non-blocking socket) until it closes; the slot it
        was accepted in is freed then."""
        accepted = trio.current_time()
        try:
            if self.tls is not None:
                stream = self.handoff.tls(trio.socket.from_stdlib_socket(sock), self.tls, accepted)
                await self.handoff.serve(stream)
                return
            connection = _Connection(self, sock, accepted)
            prefix = await connection.serve()
            if prefix is not None:
                plain = trio.socket.from_stdlib_socket(sock)
                await self.handoff.serve(self.handoff.plain(plain, prefix, accepted))
        except Exception:  # never let one connection take the listener down
            log.exception("error serving a connection")
        finally:
            sock.close()  # synchronous: nothing here may leak a descriptor
            self.slots.release()


class _Connection:
    """One client connection while it is served here.

    Two tasks: the connection's task parses requests and runs the app for each, one at a time;
    a reader task reads the socket all along and appends to :attr:`buffer`. Reading all along is
    how a client's leaving is noticed while a response is being produced (``http.disconnect``,
    and the exchange's :class:`ClientWatch` fires), without a watcher task per request; and the
    wait for the next request is the same wait, so a request costs one wake-up of each task.
    """

    __slots__ = (
        "_data",
        "_discard",
        "_idle_closed",
        "_resume",
        "accepted",
        "buffer",
        "client",
        "door",
        "eof",
        "exchange",
        "open",
        "server",
        "sock",
        "unread",
    )

    def __init__(self, door: FrontDoor, sock: socket.socket, accepted: float) -> None:
        self.door = door
        self.sock = sock
        #: trio time of the accept (the first head's timeout counts from it)
        self.accepted = accepted
        #: bytes read and not yet parsed or handed to the app
        self.buffer = bytearray()
        #: the client closed (or reset) its side
        self.eof = False
        #: writes still possible (false after a failed or interrupted write)
        self.open = True
        self.exchange: _Exchange | None = None
        self._data: trio.Event | None = None  # set when bytes (or EOF) arrive
        self._resume: trio.Event | None = None  # set when the reader may read on
        self._discard = False  # lingering: drop what arrives
        self._idle_closed = False  # closed while idle between requests (see ``close_idle``)
        #: an exchange ended with part of its request body unread (see ``_linger``)
        self.unread = False
        try:
            self.client: tuple[str, int] | None = sock.getpeername()[:2]
            self.server: tuple[str, int] | None = sock.getsockname()[:2]
        except OSError:  # already reset by the peer
            self.eof = True
            self.open = False
            self.client = self.server = None

    # -- the reader task ---------------------------------------------------------------------------

    async def read_all_along(self) -> None:
        """Append whatever the client sends to the buffer until EOF (pausing when the buffer is
        full); at EOF, tell the exchange in progress that its client left."""
        short = False
        while not self.eof:
            if len(self.buffer) >= READ_AHEAD and not self._discard:
                self._resume = trio.Event()
                await self._resume.wait()
                continue
            try:
                # After a short read the next bytes are still to come: wait before reading.
                data = await sockio.receive(self.sock, READ_SIZE, wait_first=short)
            except _NETWORK_ERRORS:
                data = b""
            short = len(data) < READ_SIZE
            if not data:
                self.eof = True
                if self.exchange is not None:
                    self.exchange.client_left()
            elif not self._discard:
                self.buffer += data
            if self._data is not None:
                self._data.set()
                self._data = None

    async def more_data(self) -> bool:
        """Wait until more bytes arrived; False at EOF."""
        if self.eof:
            return False
        event = self._data
        if event is None:  # else shared: the reader sets it for every waiter (the linger)
            event = self._data = trio.Event()
        await event.wait()
        return self._readable()

    def _readable(self) -> bool:
        """Bytes to parse, or more may come."""
        return bool(self.buffer) or not self.eof

    def take(self, size: int) -> bytes:
        """Remove and return up to ``size`` bytes from the front of the buffer."""
        buffer = self.buffer
        chunk = bytes(buffer[:size])
        del buffer[:size]
        if self._resume is not None and len(buffer) < READ_AHEAD:
            self._resume.set()
            self._resume = None
        return chunk

    # -- the connection's task ---------------------------------------------------------------------

    async def serve(self) -> bytes | None:
        """Serve plain requests until the connection ends (None) or one is not plain: then the
        bytes read so far, for hypercorn."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read_all_along)
            try:
                plain = await self._serve_requests()
                if plain:
                    await self._linger()
            finally:
                nursery.cancel_scope.cancel()
        return None if plain else bytes(self.buffer)

    async def _serve_requests(self) -> bool:
        """False when a request that is not plain is next in the buffer."""
        door = self.door
        buffer = self.buffer
        began = self.accepted  # the first head's time counts from the accept
        while self.open:
            # One deadline for the whole head (SPEC 6.1 head_timeout): a client trickling a
            # byte at a time does not get a fresh timeout per byte.
            deadline = began + door.head_timeout
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                if len(buffer) > MAX_HEAD or b"\n\n" in buffer:
                    return False  # too large, or bare-LF line endings: hypercorn decides
                if not await self._wait_for_request(deadline):
                    log.debug("closing a connection whose request head did not arrive in time")
                    return True
            head = parse_request_head(bytes(buffer[:end]))
            if head is None:
                return False
            self.take(end + 4)
            exchange = self.exchange = _Exchange(self, head)
            if self.eof:
                exchange.client_left()  # sent its request and left: as hypercorn, a disconnect
            try:
                await exchange.run()
            finally:
                self.exchange = None
            if not exchange.keep_alive or door.closing:
                return True
            if not buffer and not await self._wait_idle():
                return True
            began = trio.current_time()  # the next head's first bytes are here
        return True

    async def _wait_for_request(self, deadline: float) -> bool:
        """Wait for more of a request head; False when the client closed, ``deadline`` passed
        or the server is closing."""
        door = self.door
        more = False
        with trio.CancelScope(deadline=deadline) as waiting:
            door.idle.add(waiting)
            try:
                more = await self.more_data()
            finally:
                door.idle.discard(waiting)
        return more and not waiting.cancelled_caught

    async def _wait_idle(self) -> bool:
        """Between two requests: wait for the next one's first bytes; False when the client
        closed, ``keep_alive_timeout`` passed, the server is closing, or a new client needs the
        slot (the last three: :meth:`close_idle`). Closing here is routine: it logs nothing
        above debug."""
        door = self.door
        if door.closing:
            return False
        door.idle_since(self)
        try:
            more = await self.more_data()
        finally:
            door.keep_alive.pop(self, None)
        if self._idle_closed:
            log.debug("closing an idle keep-alive connection")
            return False
        return more

    def close_idle(self) -> None:
        """End the wait of :meth:`_wait_idle` (the connection then closes)."""
        self._idle_closed = True
        if self._data is not None:
            self._data.set()
            self._data = None

    async def more_body(self) -> bool:
        """Wait until more bytes of a request body arrived; False at EOF, or when none came
        within ``body_timeout`` (SPEC 6.1): the connection is then given up, unanswered."""
        with trio.move_on_after(self.door.body_timeout):
            return await self.more_data()
        log.debug("closing a connection whose request body paused too long")
        self.open = False
        if self.exchange is not None:
            self.exchange.client_left()
        return False

    async def _linger(self) -> None:
        """Before closing: send our FIN, then drop what arrives until the client's, briefly.

        Closing a socket with unread input (a pipelined request, a body the app refused to read)
        makes the kernel send RST, and an RST can destroy the response the client has not read
        yet. So, like nginx's lingering close, wait a little for the client to close first.
        """
        if self.eof or not self.open or not (self.buffer or self.unread):
            return  # no input left unread: a plain close sends FIN, not RST
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except _NETWORK_ERRORS:
            return
        self._discard = True
        self.buffer.clear()
        if self._resume is not None:
            self._resume.set()
        with trio.move_on_after(LINGER_SECONDS):
            while await self.more_data():
                pass

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False (and the connection marked closed) when that failed."""
        if not self.open:
            return False
        try:
            await sockio.send_all(self.sock, data)
            return True
        except _NETWORK_ERRORS:
            self.open = False
            return False
        except BaseException:
            self.open = False  # cancelled mid-write: the framing can no longer be trusted
            raise


class _Exchange:
    """One request and its response: the ASGI ``receive``/``send`` pair for the app."""

    __slots__ = (
        "body_left",
        "chunked",
        "complete",
        "conn",
        "ended",
        "head",
        "keep_alive",
        "length_left",
        "pending_head",
        "relaying",
        "started",
        "suppress_body",
        "watch",
    )

    def __init__(self, conn: _Connection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.body_left = head.content_length
        self.keep_alive = not head.close
        self.started = False
        self.complete = False
        self.pending_head: list[bytes] | None = None
        self.chunked = False
        self.suppress_body = False
        self.length_left: int | None = None
        #: tells the app when the client leaves (``Edge.watch``, edge/contract.py)
        self.watch = ClientWatch()
        #: the relay hub's relay of an upstream body in progress (see ``relay``)
        self.relaying: Relay | None = None
        #: set when the response is complete or the client left (receive() then says disconnect)
        self.ended: trio.Event | None = None

    def scope(self) -> dict[str, Any]:
        head = self.head
        return {
            "type": "http",
            "http_version": "1.1",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": head.method,
            "scheme": "http",
            "path": unquote(head.raw_path.decode("ascii")),
            "raw_path": head.raw_path,
            "query_string": head.query_string,
            "root_path": "",
            "headers": head.headers,
            "client": self.conn.client,
            "server": self.conn.server,
            "extensions": {EDGE_EXTENSION: self},
        }

    async def run(self) -> None:
        try:
            await self.conn.door.app(self.scope(), self.receive, self.send)
        except Exception:
            head = self.head
            log.exception("error in the app while serving %s %r", head.method, head.raw_path)
            self.keep_alive = False
        if not self.started:
            self.keep_alive = False
            # a client that left (or cut its body short with a half-close) gets no answer:
            # its request never was whole, so a 500 would blame us for its bytes
            if not self.watch.disconnected:
                await self._send_500()
        elif not self.complete:
            self.keep_alive = False  # left truncated on purpose (see the module docstring)
            if self.pending_head is not None:
                # A Content-Length head still held back for its first body bytes: send it, so
                # the client sees a response cut short, not a connection closed with no answer
                # (which clients take for a stale connection and may silently retry).
                await self._write(b"")
        if self.keep_alive and self.body_left > 0:
            self.keep_alive = await self._skip_body()
        self.conn.unread = self.body_left > 0

    # -- receive -----------------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.body_left >= 0:
            return await self._body()
        return await self._wait_for_end()

    async def _body(self) -> Message:
        """The next part of the request body (``body_left`` -1 once its end was handed out)."""
        conn = self.conn
        if self.body_left == 0:
            self.body_left = -1
            return {"type": "http.request", "body": b"", "more_body": False}
        while not conn.buffer:
            if not await conn.more_body():
                self.body_left = -1
                return _DISCONNECT
        chunk = conn.take(self.body_left)
        self.body_left -= len(chunk)
        more = self.body_left > 0
        if not more:
            self.body_left = -1
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def _wait_for_end(self) -> Message:
        """``http.disconnect`` once the response is complete or the client left."""
        if self.complete or self.watch.disconnected:
            await trio.lowlevel.checkpoint()
            return _DISCONNECT
        if self.ended is None:
            self.ended = trio.Event()
        await self.ended.wait()
        return _DISCONNECT

    def client_left(self) -> None:
        """The client closed its side or a write to it failed: tell the app."""
        self.keep_alive = False
        if not self.watch.disconnected:
            self.watch.client_left()
        if self.relaying is not None:
            self.relaying._finish(CLIENT_GONE)  # the relay's task wakes and ends it
        self._end()

    def _end(self) -> None:
        if self.ended is not None:
            self.ended.set()

    async def _skip_body(self) -> bool:
        """Read and drop the body the app did not read, if it is small (and comes without a
        pause over ``body_timeout``); else close."""
        conn = self.conn
        if self.body_left > MAX_DRAIN:
            return False
        while self.body_left > 0:
            if not conn.buffer and not await conn.more_body():
                return False
            self.body_left -= len(conn.take(self.body_left))
        return True

    # -- send --------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError(f"unexpected {kind} (response not started or already complete)")
            await self._send_body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self._start(int(message["status"]), message.get("headers", ()))
            if self.pending_head is not None and self.length_left is None:
                # no Content-Length: a stream; its client sees the status before the first event
                await self._write(b"")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _start(self, status: int, headers: Any) -> None:
        self.suppress_body = self.head.method == "HEAD" or status < 200 or status in (204, 304)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        has_date = False
        for name, value in headers:
            lname = bytes(name).lower()
            if lname == b"content-length" and not self.suppress_body:
                if not bytes(value).isdigit():  # an app bug; raised before anything is sent
                    raise ValueError(f"invalid content-length {bytes(value)[:30]!r}")
                self.length_left = int(value)
            elif lname == b"date":
                has_date = True
            elif lname == b"connection" and b"close" in bytes(value).lower():
                self.keep_alive = False
            elif lname == b"transfer-encoding":
                continue  # the framing is ours to choose
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_date:
            lines.append(b"date: " + self.conn.door.date() + b"\r\n")
        self.started = True
        if self.suppress_body:
            pass
        elif self.length_left is None:
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        self.pending_head = lines

    def _head_bytes(self) -> bytes:
        lines = self.pending_head
        assert lines is not None
        self.pending_head = None
        if self.body_left > MAX_DRAIN:
            self.keep_alive = False  # answered before reading a large body: it will not be read
        if not self.keep_alive or self.conn.door.closing:
            self.keep_alive = False
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def frame(self, body: bytes, more: bool) -> bytes:
        """The bytes to write for a body message: the head first while it is pending, the body
        framed (chunked, or cut to the declared length). The last message completes the
        response. Used by ``send`` and by the relay hub."""
        if not more:
            self.complete = True
        if self.suppress_body:
            body = b""
        elif self.chunked:
            if body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        elif self.length_left is not None:
            if len(body) > self.length_left:
                body = body[: self.length_left]  # more than declared: never desynchronise
                self.keep_alive = False
            self.length_left -= len(body)
            if not more and self.length_left:
                self.complete = False  # less than declared: the client sees it truncated
        if self.pending_head is not None:
            return self._head_bytes() + body
        return body

    async def _send_body(self, body: bytes, more: bool) -> None:
        data = self.frame(body, more)
        if not more:
            self._end()
        if data:
            await self._write(data)

    async def relay(self, response: UpstreamResponse, on_data: Callable[[bytes], None]) -> str:
        """``Edge.relay`` (edge/contract.py): the relay hub moves the rest of the body straight
        from the upstream's socket to the client's (relay_hub.py); a body the hub cannot move (it
        arrived whole with the head, or comes over TLS) goes as body messages. No cancel scope:
        a client that leaves ends the hub's relay itself (``client_left``)."""
        if not self.started or self.complete:
            raise RuntimeError("a relay needs a started, unfinished response")
        parts = response.relay_parts()
        if parts is None:
            return await relay_chunks(response, self.send, self.watch, on_data)
        upstream, reader, ready = parts
        relay = self.conn.door.hub.start(
            upstream, reader, ready, self.conn.sock, self.frame, on_data
        )
        if not self.conn.open or self.watch.disconnected:  # the client is already gone
            relay._finish(CLIENT_GONE)
        self.relaying = relay
        try:
            await relay.finished.wait()
        finally:
            # Settled even when cancelled: a relay that finished in the same moment still
            # counts as a complete response.
            self.relaying = None
            outcome = self.end_relay(relay)
            response.relay_ended()
        return outcome

    def end_relay(self, relay: Relay) -> str:
        """Take ``relay`` out of the hub (synchronous: for a ``finally``) and settle the
        connection; returns the outcome (``CLIENT_GONE`` when it was cut short)."""
        self.conn.door.hub.stop(relay)
        outcome = relay.outcome or CLIENT_GONE
        if outcome != DONE and self.pending_head is None:
            # a frame may be half written: never write to, or reuse, the connection again (with
            # the head still pending nothing was written: it can still go out)
            self.conn.open = False
        if outcome == CLIENT_GONE:
            self.client_left()
        elif self.complete:
            self._end()
        return outcome

    async def _write(self, body: bytes) -> None:
        data = self._head_bytes() + body if self.pending_head is not None else body
        if not await self.conn.send(data):
            self.client_left()

    async def _send_500(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-length", b"0")],
            }
        )
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


if TYPE_CHECKING:

    def _is_an_edge(exchange: _Exchange) -> Edge:  # mypy proves _Exchange keeps the contract
        return exchange


async def serve(
    app: ASGIApp,
    hypercorn_config: HypercornConfig,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    server: ServerConfig | None = None,
    tls: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns, then drain.

    Draining: the listeners close at once, idle connections close, in-flight responses get
    ``hypercorn_config.graceful_timeout`` seconds before they are cut (as hypercorn's own serve).
    Started with the listening URLs (``https://`` ones with ``tls``).

    Raises:
        OSError: the address cannot be bound (e.g. ``EADDRINUSE``).
    """
    door = FrontDoor(app, hypercorn_config, server or ServerConfig(), tls)
    listeners = [
        sockio.stdlib_socket(listener.socket)
        for listener in await open_listeners(host, port, hypercorn_config.backlog)
    ]
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(door.hub.run)  # outlives every connection: they use it
            outer.start_soon(door.reap_idle)
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(_accept, door, listener, connections)
                    scheme = "http" if tls is None else "https"
                    task_status.started([_url(listener, scheme) for listener in listeners])
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
                for listener in listeners:
                    listener.close()
                await door.begin_closing()
                timeout = hypercorn_config.graceful_timeout
                connections.cancel_scope.deadline = trio.current_time() + (
                    timeout if timeout is not None else math.inf
                )
            outer.cancel_scope.cancel()
    finally:
        for listener in listeners:
            listener.close()


async def _accept(door: FrontDoor, listener: socket.socket, connections: trio.Nursery) -> None:
    """Accept connections on ``listener`` and start a handler for each, until cancelled.

    At ``max_connections`` it stops accepting (new clients wait in the listen backlog) and
    closes the oldest idle keep-alive connection to make room; when accept() fails for lack of
    descriptors it pauses (edge/limits.py ``AcceptTrouble``) rather than spinning.
    """
    tcp = listener.family in (socket.AF_INET, socket.AF_INET6)
    slots = door.slots
    trouble = AcceptTrouble()
    while True:
        await trio.lowlevel.wait_readable(listener)
        while slots.is_full():  # a client waits and no slot is free: make room
            door.close_one_idle()
            await slots.wait_released()
        for _ in range(64):  # a burst of connections is taken in one wake-up, within bounds
            if slots.is_full():
                break  # back to waiting: only a client that waits may close an idle connection
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _ACCEPT_PAUSE:
                    with trio.move_on_after(trouble.failed(exc)):
                        await slots.wait_released()  # a closed connection frees a descriptor
                    break
                log.debug("accept() failed for one connection: %s", exc)
                continue
            trouble.succeeded()
            try:
                sock.setblocking(False)
                if tcp:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()  # reset before we could even configure it
                continue
            slots.take()
            connections.start_soon(door.handle, sock)


def _url(listener: socket.socket, scheme: str) -> str:
    host, port = listener.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
