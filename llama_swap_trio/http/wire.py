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
