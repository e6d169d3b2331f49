"""A lean HTTP/1.1 client for the forwarding hot path: one keep-alive pool per upstream process.

Why not httpx here: measured on the 2-core machine (benchmarks/RESULTS.md), forwarding through
``httpx.AsyncClient`` cost about 3.5 ms of CPU per small request, most of it in httpx's request
building and httpcore's pool bookkeeping (encode/httpx#3215), and relayed a bulk stream at about
50 MB/s. The forwarder needs much less than a general client: one host, HTTP/1.1, no redirects,
cookies, proxies, decompression or default headers. This module is that much and no more: the
request head written directly, the response parsed by :mod:`.wire` (strict field syntax, RFC 9112
body framing), trio streams for the sockets, a LIFO list of idle connections. h11 was used here
first; its chunked decoding and event objects were a third of the CPU of a relayed token stream.
httpx stays in use for everything else (health probes over https, the watch client, tests).

Rules that make it safe:

- A connection goes back to the pool only after a response read to its exact end, with no byte
  after it, from an HTTP/1.1 upstream that did not say ``Connection: close``. Anything else (an
  error, a cancellation at any checkpoint, a response closed before its end) closes the socket.
  Closing is synchronous, so no ``finally`` here awaits and cancellation can never leave a
  half-used connection in the pool.
- An idle connection is checked before reuse: past ``keepalive_expiry`` or readable (the server
  closed it, or sent something unasked) it is discarded.
- Request heads are written from the caller's headers as given: they came through the front
  door's or h11's parser (the client's request) or are ours, so they hold no CR or LF.
- A request whose connection closes before a single response byte arrived raises
  :class:`ClosedBeforeResponse`; the forwarder retries that once (a stale keep-alive connection,
  encode/httpx#2983). Nothing of the response was seen, so nothing was relayed.
"""

from __future__ import annotations

import select
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any, cast

import trio

from llama_swap_trio.edge import sockio
from llama_swap_trio.edge.wire import (
    MAX_RESPONSE_HEAD,
    BodyReader,
    Framing,
    ProtocolError,
    ResponseHead,
    parse_response_head,
)

READ_SIZE = sockio.READ_SIZE
#: idle pooled connections kept per upstream process
MAX_IDLE = 32
#: seconds an idle connection is kept; below cpp-httplib's (llama-server) 5 s keep-alive timeout
KEEPALIVE_EXPIRY = 4.0
#: request bodies up to this size are joined with the head into one write
SMALL_BODY = 64 * 1024

Headers = Sequence[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The exchange with the upstream failed."""


class ConnectFailed(UpstreamError):
    """The TCP (or TLS) connection could not be opened (refused, unreachable, TLS error)."""


class ConnectTimedOut(UpstreamError):
    """The connection was not open within the connect timeout."""


class ClosedBeforeResponse(UpstreamError):
    """A reused keep-alive connection broke before any byte of a response arrived: the server
    had closed it while idle (safe to retry once). On a new connection the same break is a
    :class:`BrokenResponse`: the server may have acted on the request before failing."""


class BrokenResponse(UpstreamError):
    """The upstream broke the protocol or the connection after its response began."""


class _Connection:
    """One socket to the upstream, idle or carrying one exchange."""

    __slots__ = ("got_bytes", "idle_since", "sock", "tls")

    def __init__(
        self, sock: socket.socket | trio.socket.SocketType, tls: trio.SSLStream[Any] | None
    ) -> None:
        #: a non-blocking stdlib socket (plain http: read and written with sockio), or the trio
        #: socket under ``tls`` (https: read and written through the TLS stream)
        self.sock = sock
        self.tls = tls
        self.idle_since = 0.0
        #: any byte received since the current request was sent (see ClosedBeforeResponse)
        self.got_bytes = False

    def close(self) -> None:
        """Close the socket at once (synchronous: safe in any ``finally``, never awaits)."""
        self.sock.close()

    def looks_reusable(self, now: float, expiry: float) -> bool:
        if now - self.idle_since > expiry or self.sock.fileno() < 0:
            return False
        # Readable while idle means EOF (the server closed it) or data nobody asked for.
        # poll, not select: select() refuses descriptors >= 1024, which a busy daemon reaches.
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    async def receive(self, *, wait_first: bool = False) -> bytes:
        if self.tls is None:
            sock = cast(socket.socket, self.sock)
            data = await sockio.receive(sock, READ_SIZE, wait_first=wait_first)
        else:
            data = bytes(await self.tls.receive_some(READ_SIZE))
        if data:
            self.got_bytes = True
        return data

    async def send_all(self, data: bytes) -> None:
        if self.tls is None:
            await sockio.send_all(cast(socket.socket, self.sock), data)
        else:
            await self.tls.send_all(data)


class UpstreamResponse:
    """A response whose head arrived; read the body with :meth:`next_chunk`, then :meth:`close`.

    Attributes:
        status_code: the status.
        headers: the header list as received, names lower-cased, values untouched.
    """

    __slots__ = (
        "_client",
        "_conn",
        "_done",
        "_keep_alive",
        "_reader",
        "_ready",
        "_streaming",
        "content_length",
        "has_body",
        "headers",
        "status_code",
    )

    def __init__(
        self, client: UpstreamClient, conn: _Connection, head: ResponseHead, rest: bytes
    ) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self._done = False
        self._keep_alive = head.keep_alive
        #: the last body read was short (see next_chunk)
        self._streaming = False
        self._reader = BodyReader(head)
        #: body bytes that came with the head
        self._ready = self._reader.feed(rest) if rest else []
        self.status_code = head.status
        #: the body's length when it is delimited by Content-Length, else None
        self.content_length = head.length if head.framing == Framing.LENGTH else None
        #: the response has a body (not HEAD, 1xx, 204 or 304)
        self.has_body = head.framing != Framing.NONE
        self.headers = head.headers

    @property
    def ended(self) -> bool:
        """The whole body has been handed out (so the last chunk returned was the last one)."""
        return self._done

    @property
    def arrived_whole(self) -> bool:
        """The whole body arrived with the head (before any read): reading it waits for nothing."""
        return self._reader.done

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (given in lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def next_chunk(self) -> bytes | None:
        """The body bytes that have arrived (waiting for some if none has); None at its end.

        Everything already received is handed out at once: several SSE events that arrived
        together become one chunk, so a busy proxy writes (and pays for) fewer, larger messages
        instead of falling behind. Nothing is ever held back waiting for more.

        After a chunk, :attr:`ended` tells whether the body is complete (its end was among the
        bytes received): the caller can send that chunk as the last one, saving a write.

        Raises:
            BrokenResponse: the connection broke or the upstream broke the protocol mid-body.
        """
        conn = self._conn
        if conn is None:
            return None
        reader = self._reader
        pieces, self._ready = self._ready, []
        try:
            while not pieces and not reader.done:
                # Mid-body, after a short read, the next bytes are most likely still to come (the
                # next event of a stream): wait before reading. After a full read, read at once.
                data = await conn.receive(wait_first=self._streaming)
                self._streaming = 0 < len(data) < READ_SIZE
                if data:
                    pieces = reader.feed(data)
                else:
                    reader.eof()
        except (ProtocolError, trio.BrokenResourceError, OSError) as exc:
            self.close()
            raise BrokenResponse(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.close()  # cancelled mid-read: the connection's state is unknown
            raise
        if reader.done:
            self._done = True
            self.close()
        if not pieces:
            return None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def relay_parts(self) -> tuple[socket.socket, BodyReader, list[bytes]] | None:
        """What the relay hub needs to move the rest of the body itself (edge/relay_hub.py): the
        socket, the framing state and the bytes already read; None when there is no rest to move
        (the body is complete) or the hub cannot (TLS). Call :meth:`relay_ended` after it."""
        conn = self._conn
        if conn is None or conn.tls is not None or self._reader.done:
            return None
        ready, self._ready = self._ready, []
        return cast(socket.socket, conn.sock), self._reader, ready

    def relay_ended(self) -> None:
        """The hub is done with the body: a body read to its end makes the connection reusable."""
        self._done = self._reader.done

    def close(self) -> None:
        """Release the connection: pooled after a complete body, else closed. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            reusable = self._done and self._keep_alive and not self._reader.extra
            self._client._release(conn, reusable=reusable)


class UpstreamClient:
    """Keep-alive connections to one upstream process (``http`` or ``https`` base URL).

    Args:
        base_url: the model's ``proxy`` URL; its path, if any, prefixes every request target.
        connect_timeout: seconds to open a connection; None for no limit.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float | None,
        max_idle: int = MAX_IDLE,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (name if self.port == default else f"{name}:{self.port}").encode()
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.is_closed = False
        self._idle: list[_Connection] = []
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None

    @property
    def idle_count(self) -> int:
        """Idle pooled connections (for tests and diagnostics)."""
        return len(self._idle)

    async def request(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> UpstreamResponse:
        """Send a request (``target``: path and query) and wait for the response head.

        ``headers`` go out as given, after ``host``; set ``content-length`` for a body.

        Raises:
            ConnectFailed, ConnectTimedOut: no connection.
            ClosedBeforeResponse: the connection broke before any response byte.
            BrokenResponse: a malformed response head.
        """
        if self.is_closed:
            raise RuntimeError("UpstreamClient is closed")
        reused = self._reuse()
        conn = reused or await self._connect()
        conn.got_bytes = False
        try:
            lines = [
                b"%s %s HTTP/1.1\r\nhost: %s\r\n"
                % (
                    method.encode("latin-1"),
                    (self.prefix + target).encode("latin-1"),
                    self.host_header,
                )
            ]
            lines += [b"%s: %s\r\n" % (name, value) for name, value in headers]
            lines.append(b"\r\n")
            head = b"".join(lines)
            try:
                if len(body) <= SMALL_BODY:
                    await conn.send_all(head + body)  # one write, one segment
                else:  # a large upload: no copy of the body just to join it with the head
                    await conn.send_all(head)
                    await conn.send_all(body)
            except (trio.BrokenResourceError, OSError) as exc:
                raise ClosedBeforeResponse(f"sending the request failed: {exc}") from exc
            return await self._read_head(conn, method)
        except ClosedBeforeResponse as exc:
            conn.close()
            if reused is None:
                raise BrokenResponse(str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise

    async def _read_head(self, conn: _Connection, method: str) -> UpstreamResponse:
        buffer = b""
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_RESPONSE_HEAD:
                    raise BrokenResponse("the upstream's response head is too large")
                try:
                    data = await conn.receive()
                except (trio.BrokenResourceError, OSError) as exc:
                    if not conn.got_bytes:
                        raise ClosedBeforeResponse(str(exc) or type(exc).__name__) from exc
                    raise BrokenResponse(str(exc) or type(exc).__name__) from exc
                if not data:
                    if not conn.got_bytes:
                        raise ClosedBeforeResponse("the upstream closed the connection")
                    raise BrokenResponse("the upstream closed the connection mid-head")
                buffer += data
                continue
            try:
                head = parse_response_head(buffer[:end], method)
            except ProtocolError as exc:
                raise BrokenResponse(str(exc)) from exc
            buffer = buffer[end + 4 :]
            if head.status == 101:
                raise BrokenResponse("unexpected 101 Switching Protocols")
            if head.status >= 200:
                try:
                    return UpstreamResponse(self, conn, head, buffer)
                except ProtocolError as exc:  # bad framing in the body bytes that came along
                    raise BrokenResponse(str(exc)) from exc
            # 100 Continue and friends: the real head follows

    def _reuse(self) -> _Connection | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            if conn.looks_reusable(now, self.keepalive_expiry):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            with trio.fail_after(self.connect_timeout or float("inf")):
                stream = await trio.open_tcp_stream(self.host, self.port)
                if self._ssl is None:
                    return _Connection(sockio.stdlib_socket(stream.socket), None)
                tls = trio.SSLStream(
                    stream, self._ssl, server_hostname=self.host, https_compatible=True
                )
                try:
                    await tls.do_handshake()
                except BaseException:
                    stream.socket.close()
                    raise
        except trio.TooSlowError:
            raise ConnectTimedOut(
                f"no connection to {self.host}:{self.port} within {self.connect_timeout:g}s"
            ) from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        return _Connection(stream.socket, tls)

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable and not self.is_closed and len(self._idle) < self.max_idle:
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close every idle connection; responses still being read close theirs when done."""
        self.is_closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
