"""Reading a request: the body (bounded), the model it names (SPEC 3.1), the ``/upstream`` target.

Everything here is pure except :func:`read_body`. The model is looked for where SPEC 3.1 says:

- a JSON body (``Content-Type: application/json`` with any parameters, or no ``Content-Type`` at
  all) gives ``model``;
- a ``multipart/form-data`` or ``application/x-www-form-urlencoded`` body gives its ``model`` field;
- ``?model=`` in the query is the last fallback.

A malformed body is an error (400) even when the query names a model: the client sent something
we cannot forward with confidence, and saying so beats guessing.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import attrs

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config, ModelConfig
from llama_swap_trio.http import json_fast
from llama_swap_trio.http.asgi import Receive, Scope
from llama_swap_trio.http.body_buffer import Assembler

#: SPEC 3.1: larger request bodies get 413.
MAX_BODY_BYTES = 100 * 1024 * 1024

Source = Literal["json", "multipart", "form", "query"]


class ClientDisconnected(Exception):
    """The client went away before its request body was complete; nothing is to be answered."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (given in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body, at most ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before a single body byte is read;
    a chunked body is counted as it arrives and refused as soon as it passes the limit.

    Raises:
        ProxyError: 413 ``request_too_large``.
        ClientDisconnected: the client closed the connection while sending.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise errors.request_too_large(limit)
    # a large declared body is copied into place piece by piece (http/body_buffer.py): no
    # single long join on the event loop
    expected = int(declared) if declared is not None and declared.strip().isdigit() else 0
    body = Assembler(expected)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            if len(body) + len(chunk) > limit:
                raise errors.request_too_large(limit)
            body.add(chunk)
        if not message.get("more_body", False):
            break
    return body.result()


@attrs.frozen
class ParsedRequest:
    """What the proxy needs to know about a model-routed request."""

    #: the requested model name, as the client wrote it (an id or an alias)
    model: str
    #: where ``model`` was found
    source: Source
    #: the parsed JSON object when the body is JSON (the rewriter may change it in place)
    json_body: dict[str, Any] | None = None
    #: ``"stream": true`` in a JSON body
    stream: bool = False
    #: the multipart boundary when the body is multipart
    boundary: bytes | None = None
    #: a JSON body read by the helper process (http/heavy_body.py): ``json_body`` is None
    heavy: bool = False


def media_type(scope: Scope) -> tuple[str | None, bytes]:
    """``(media type in lower case or None when absent, raw Content-Type value)``."""
    raw = header(scope, b"content-type")
    if raw is None:
        return None, b""
    return raw.split(b";", 1)[0].strip().lower().decode("latin-1"), raw


def extract_model(scope: Scope, body: bytes) -> ParsedRequest:
    """The model a request names, per SPEC 3.1.

    Raises:
        ProxyError: 400 ``model_required`` (no model anywhere, or an empty one), ``invalid_json``
            (a JSON body that does not parse) or ``invalid_request`` (a JSON value that is not an
            object, a non-string ``model``, a malformed form).
    """
    kind, raw_type = media_type(scope)
    json_body: dict[str, Any] | None = None
    stream = False
    boundary: bytes | None = None
    if _is_json(kind, body):
        if body.strip():
            json_body = _parse_json_object(body)
            stream = json_body.get("stream") is True
            model = json_body.get("model")
            if model is not None and not isinstance(model, str):
                raise errors.invalid_request("'model' must be a string")
            if model:
                return ParsedRequest(model, "json", json_body, stream)
    elif kind == "multipart/form-data":
        boundary = multipart_boundary(raw_type)
        span = find_form_field(body, boundary, b"model")
        if span is not None:
            model = _decode_field(body[span[0] : span[1]])
            if model:
                return ParsedRequest(model, "multipart", boundary=boundary)
    elif kind == "application/x-www-form-urlencoded":
        model = _first_value(_parse_urlencoded(body), "model")
        if model:
            return ParsedRequest(model, "form")
    query = scope.get("query_string", b"")
    if b"model" in query:
        model = _first_value(_parse_urlencoded(query), "model")
        if model:
            return ParsedRequest(model, "query", json_body, stream, boundary)
    raise errors.model_required()


def json_kind(scope: Scope, body: bytes) -> bool:
    """Whether the body is read as JSON (SPEC 3.1: JSON, no ``Content-Type``, or curl's form)."""
    return _is_json(media_type(scope)[0], body)


def _is_json(kind: str | None, body: bytes) -> bool:
    return kind is None or kind == "application/json" or _curl_json(kind, body)


def _curl_json(kind: str, body: bytes) -> bool:
    """A JSON object sent as a url-encoded form: what ``curl -d '{...}'`` does by default.

    A real form never starts with ``{``, so reading such a body as JSON only helps.
    """
    return kind == "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{"


def _parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json_fast.loads(body)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise errors.invalid_json(str(error)) from None
    except RecursionError:
        raise errors.invalid_json("nested too deeply") from None
    if not isinstance(value, dict):
        raise errors.invalid_request("the request body must be a JSON object")
    return value


def _parse_urlencoded(data: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(data.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeError:
        raise errors.invalid_request("malformed url-encoded form") from None


def _first_value(pairs: list[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def _decode_field(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.invalid_request("malformed multipart body: 'model' is not UTF-8") from None


# --- multipart ------------------------------------------------------------------------------------

_PARAM = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _params(value: bytes) -> dict[bytes, bytes]:
    """Parameters of a header value such as ``form-data; name="model"`` (names lower-cased)."""
    found: dict[bytes, bytes] = {}
    for match in _PARAM.finditer(value):
        raw = match.group(2).strip()
        if raw.startswith(b'"'):
            raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
        found.setdefault(match.group(1).lower(), raw)
    return found


def multipart_boundary(content_type: bytes) -> bytes:
    boundary = _params(content_type).get(b"boundary", b"")
    if not boundary or len(boundary) > 200:
        raise errors.invalid_request("multipart body without a valid boundary")
    return boundary


def find_form_field(body: bytes, boundary: bytes, name: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the value of the first non-file part called ``name``, or None.

    Walks the whole body so that a malformed multipart body is refused even when the field comes
    first (it would be forwarded as it is, and the upstream would fail on it less clearly).

    Raises:
        ProxyError: 400 ``invalid_request`` for a malformed body.
    """
    delimiter = b"--" + boundary
    position = body.find(delimiter)
    if position < 0 or (position > 0 and body[position - 2 : position] != b"\r\n"):
        raise errors.invalid_request("malformed multipart body: no opening boundary")
    found: tuple[int, int] | None = None
    while True:
        after = position + len(delimiter)
        if body[after : after + 2] == b"--":
            return found
        line_end = body.find(b"\r\n", after)
        if line_end < 0 or body[after:line_end].strip(b" \t"):
            raise errors.invalid_request("malformed multipart body: bad boundary line")
        part_start = line_end + 2
        part_end = body.find(b"\r\n" + delimiter, part_start)
        if part_end < 0:
            raise errors.invalid_request("malformed multipart body: no closing boundary")
        if body.startswith(b"\r\n", part_start):
            headers, content_start = b"", part_start + 2
        else:
            headers_end = body.find(b"\r\n\r\n", part_start, part_end + 2)
            if headers_end < 0:
                raise errors.invalid_request("malformed multipart body: part without headers end")
            headers, content_start = body[part_start:headers_end], headers_end + 4
        if found is None and _is_field(headers, name):
            found = (content_start, part_end)
        position = part_end + 2


def _is_field(headers: bytes, name: bytes) -> bool:
    for line in headers.split(b"\r\n"):
        key, sep, value = line.partition(b":")
        if not sep:
            raise errors.invalid_request("malformed multipart body: bad part header")
        if key.strip().lower() == b"content-disposition":
            params = _params(value)
            return params.get(b"name") == name and b"filename" not in params
    return False


# --- /upstream/{model}/{path} ---------------------------------------------------------------------


@attrs.frozen
class UpstreamTarget:
    """A resolved ``/upstream`` request path."""

    model: ModelConfig
    #: the raw (still percent-encoded) path prefix naming the model: ``org%2Fm`` or ``org/m``
    raw_name: str
    #: the rest of the raw path with its leading ``/``; "" when the path stops at the model name
    raw_rest: str


UPSTREAM_PREFIX = "/upstream/"


def match_upstream(config: Config, scope: Scope) -> UpstreamTarget | str:
    """The model an ``/upstream/...`` path names; the longest path prefix that names one wins.

    Returns the match, or the (decoded) first path segment when no prefix names a model (for the
    404 message). Works on ``raw_path`` so the remaining path keeps its percent-encoding.
    """
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    rest = path[len(UPSTREAM_PREFIX) :]
    cuts = [index for index, char in enumerate(rest) if char == "/"]
    cuts.append(len(rest))
    for cut in reversed(cuts):
        name = unquote(rest[:cut])
        if not name:
            continue
        model = config.resolve(name)
        if model is not None:
            return UpstreamTarget(model, rest[:cut], rest[cut:])
    return unquote(rest[: cuts[0]])
