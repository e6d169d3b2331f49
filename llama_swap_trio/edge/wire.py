"""Request heads for the front door (:mod:`.server`): parse the plain ones, pass on the rest.

The front door serves a request itself only when its head is unremarkable; everything else (a
websocket upgrade, a chunked or ``Expect: 100-continue`` upload, HTTP/1.0, an absolute-form
target, duplicated framing headers, anything malformed) is handed, connection and all, to
hypercorn, whose h11 parser answers it as before. So this parser never has to decide how to
reject: it says "mine" or "not mine", and "not mine" is always safe. What it accepts is a strict
subset of what h11 accepts (RFC 9112 field syntax, one ``Host``, at most one ``Content-Length``
of digits), so a request it serves gets the same scope hypercorn would have built.
"""

from __future__ import annotations

import re

#: largest request head served here (hypercorn's ``h11_max_incomplete_size`` default); a larger
#: one goes to hypercorn, which refuses it
MAX_HEAD = 16 * 1024

_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) (/[\x21-\x7e]*) HTTP/1\.1")
#: name: token; value: visible ASCII or obs-text, inner spaces and tabs, no surrounding whitespace
_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
#: fields whose presence means the exchange is not a plain request/response (see module docstring)
_NOT_OURS = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"http2-settings"})


class RequestHead:
    """A request head the front door serves.

    Attributes:
        method: e.g. ``"POST"``.
        raw_path: the target's path, percent-encoding kept; ``query_string`` the part after ``?``.
        headers: ``(name, value)`` pairs, names lower-cased (as h11 gives them to hypercorn).
        content_length: the body's size (0 without the header).
        close: the client asked to close the connection after this exchange.
    """

    __slots__ = ("close", "content_length", "headers", "method", "query_string", "raw_path")

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int,
        close: bool,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query_string = query_string
        self.headers = headers
        self.content_length = content_length
        self.close = close


def parse_request_head(head: bytes) -> RequestHead | None:
    """The head (without its final blank line), or None when the front door should not serve it."""
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    content_length: bytes | None = None
    close = False
    for raw in lines[1:]:
        field = _FIELD.fullmatch(raw)
        if field is None:
            return None  # malformed, obs-fold, or a bare LF somewhere: h11 decides
        name = field[1].lower()
        value = field[2]
        if name in _NOT_OURS:
            return None
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if content_length is not None or not value.isdigit() or len(value) > 18:
                return None
            content_length = value
        elif name == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
        headers.append((name, value))
    if hosts != 1:
        return None  # h11 answers a missing or repeated Host with 400
    target = line[2]
    path, _, query = target.partition(b"?")
    return RequestHead(
        line[1].decode("ascii"),
        path,
        query,
        headers,
        int(content_length) if content_length is not None else 0,
        close,
    )


# -- responses (the forwarding client's side) ------------------------------------------------------

#: largest response head accepted from an upstream
MAX_RESPONSE_HEAD = 64 * 1024
#: longest chunk-size or trailer line accepted
_MAX_LINE = 4 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Framing:
    """How a response body is delimited (RFC 9112 6.3)."""

    NONE = 0  # no body: HEAD, 1xx, 204, 304
    LENGTH = 1  # Content-Length
    CHUNKED = 2  # Transfer-Encoding: chunked
    CLOSE = 3  # until the connection closes


class ProtocolError(ValueError):
    """The upstream broke HTTP/1.1 (a malformed head, bad chunk framing, early close)."""


class ResponseHead:
    """A parsed response head.

    Attributes:
        status: the status code.
        headers: ``(name, value)`` pairs as sent (names keep the upstream's spelling; compare
            them lower-cased).
        framing: a :class:`Framing` value; ``length`` the Content-Length for ``LENGTH``.
        keep_alive: the connection may carry another request once this response is complete.
    """

    __slots__ = ("framing", "headers", "keep_alive", "length", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        framing: int,
        length: int,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self.framing = framing
        self.length = length
        self.keep_alive = keep_alive


def parse_response_head(head: bytes, method: str) -> ResponseHead:
    """The head (without its final blank line) of a response to a ``method`` request.

    Stricter than most servers need: every field line must be well-formed (so no CR or LF can
    ride along in a value we pass on), Content-Length values must agree.

    Raises:
        ProtocolError: saying what is wrong.
    """
    lines = head.split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        raise ProtocolError(f"malformed status line {lines[0][:100]!r}")
    status = int(status_line[2])
    if not 100 <= status <= 599:  # "000", "099": no status at all, never an interim answer
        raise ProtocolError(f"status {status_line[2].decode()} is outside 100-599")
    keep_alive = status_line[1] == b"1"  # HTTP/1.0: close after the response
    headers: list[tuple[bytes, bytes]] = []
    codings: list[bytes] = []
    lengths: set[bytes] = set()
    for raw in lines[1:]:
        field = _FIELD.fullmatch(raw)
        if field is None:
            raise ProtocolError(f"malformed header line {raw[:100]!r}")
        name = field[1].lower()
        value = field[2]
        if name == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
        elif name == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
        headers.append((field[1], value))  # the client sees the upstream's own spelling
    if method == "HEAD" or status < 200 or status in (204, 304):
        return ResponseHead(status, headers, Framing.NONE, 0, keep_alive)
    if codings:
        if lengths:
            keep_alive = False  # both: Transfer-Encoding wins, the connection is suspect
        if codings[-1] == b"chunked":
            return ResponseHead(status, headers, Framing.CHUNKED, 0, keep_alive)
        return ResponseHead(status, headers, Framing.CLOSE, 0, False)
    if lengths:
        if len(lengths) != 1:
            raise ProtocolError("conflicting Content-Length values")
        (length,) = lengths
        if not length.isdigit() or len(length) > 18:
            raise ProtocolError(f"invalid Content-Length {length[:30]!r}")
        return ResponseHead(status, headers, Framing.LENGTH, int(length), keep_alive)
    return ResponseHead(status, headers, Framing.CLOSE, 0, False)


_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)


class BodyReader:
    """Takes a response body out of the bytes read from the connection, framing removed.

    :meth:`feed` returns the body bytes each read completes (never waiting for a whole chunk);
    :attr:`done` turns true at the end of the body. A chunk that arrives whole in one read is
    passed on without a copy.
    """

    __slots__ = ("_left", "_pending", "_state", "done", "extra", "framing")

    def __init__(self, head: ResponseHead) -> None:
        self.framing = head.framing
        #: bytes of the current chunk (CHUNKED) or of the body (LENGTH) still to come
        self._left = head.length
        self._state = _SIZE
        #: framing bytes (a partial size line or CRLF) waiting for the rest
        self._pending = b""
        self.done = head.framing == Framing.NONE or (
            head.framing == Framing.LENGTH and head.length == 0
        )
        #: bytes arrived after the end of the body (the connection cannot be reused)
        self.extra = False

    def feed(self, data: bytes) -> list[bytes]:
        """Body bytes completed by ``data`` (possibly none).

        Raises:
            ProtocolError: bad chunk framing.
        """
        if self.done:
            self.extra = self.extra or bool(data)
            return []
        framing = self.framing
        if framing == Framing.CLOSE:
            return [data] if data else []
        if framing == Framing.LENGTH:
            if len(data) <= self._left:
                self._left -= len(data)
                self.done = self._left == 0
                return [data] if data else []
            piece, self.extra = data[: self._left], True
            self._left = 0
            self.done = True
            return [piece]
        if not self._pending:
            state = self._state
            if state == _DATA and len(data) < self._left:
                self._left -= len(data)  # the middle of a large chunk: no copy
                return [data]
            if state == _SIZE:
                # The usual token event: exactly one whole chunk, ``size CRLF data CRLF``.
                eol = data.find(b"\r\n", 0, 18)
                if eol > 0 and _HEX.fullmatch(data, 0, eol) is not None:
                    end = eol + 2 + int(data[:eol], 16)
                    if end > eol + 2 and len(data) == end + 2 and data.endswith(b"\r\n"):
                        return [data[eol + 2 : end]]
        if self._pending:
            data = self._pending + data  # only framing bytes wait here: a few at most
        pieces, self._pending = self._chunks(data)
        return pieces

    def eof(self) -> None:
        """The connection closed.

        Raises:
            ProtocolError: before the end of a body delimited otherwise than by the close.
        """
        if self.framing == Framing.CLOSE:
            self.done = True
        elif not self.done:
            raise ProtocolError("the upstream closed the connection in the middle of the body")

    def _chunks(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Chunk data in ``data`` (framing removed) and the unparsed rest, kept for the next read.

        Data is never kept back: a chunk's bytes are passed on as far as they have arrived.
        """
        pieces: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(end - pos, self._left)
                pieces.append(data if take == end else data[pos : pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if end - pos < 2:
                    break
                if not data.startswith(b"\r\n", pos):
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE:
                        raise ProtocolError("chunk size or trailer line too long")
                    break
                line = data[pos:eol]
                pos = eol + 2
                if state == _TRAILERS:
                    if not line:
                        self.done = True
                        self.extra = pos < end
                        return pieces, b""
                    continue  # a trailer field: dropped (we do not relay trailers)
                size = line.split(b";", 1)[0].strip(b" \t")
                if _HEX.fullmatch(size) is None:
                    raise ProtocolError(f"invalid chunk size line {line[:40]!r}")
                self._left = int(size, 16)
                self._state = _DATA if self._left else _TRAILERS
        return pieces, data[pos:] if pos < end else b""
