"""Request hygiene: refusing ambiguous framing and path escapes, and keeping keys off the upstream.

The front door (edge/server.py) hands every request it does not find plain to hypercorn, whose
h11 already refuses most malformed input before the app sees it: differing
duplicate ``Content-Length`` values, CR, LF or NUL inside header values, transfer codings other
than ``chunked`` (501), a space in the target. Three things get through and are handled here:

- ``Content-Length`` *and* ``Transfer-Encoding`` together. h11 lets the chunked coding win, as
  RFC 9112 6.3 allows, but the RFC also calls the pair a likely smuggling attempt that a server
  MAY reject; a front proxy that trusted the length would disagree with us about where the next
  request starts. We refuse it (400) and close the connection.
- ``/upstream/{model}/...`` sub-paths with dot segments (``..``, ``.``, also percent-encoded or
  hidden behind ``%2F``). httpx removes literal dot segments when it builds the upstream URL, so
  ``/upstream/m/../../x`` would leave the model's ``proxy`` base path, and many servers decode
  ``%2e%2e`` themselves. No legitimate client needs them: refused (400).
- ``?api_key=KEY``, a credential for *this* proxy (SPEC 3.6), must not travel on to the upstream,
  which would print it in its request log (and so in ``/logs`` and the feed).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from llama_swap_trio import errors
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.asgi import Scope

#: separators a server might see after decoding: ``/``, and ``\`` (some servers treat it as one)
_SEGMENT_SPLIT = re.compile(rb"[/\\]")


def framing_error(scope: Scope) -> ProxyError | None:
    """A 400 (with ``connection: close``) when the request has both a length and a coding."""
    names = {bytes(name).lower() for name, _ in scope.get("headers", ())}
    if b"content-length" in names and b"transfer-encoding" in names:
        return errors.ProxyError(
            400,
            "invalid_request_error",
            "invalid_request",
            "the request has both Content-Length and Transfer-Encoding (ambiguous framing)",
            (("connection", "close"),),
        )
    return None


def has_dot_segment(raw_rest: str) -> bool:
    """True when a segment of ``raw_rest`` is ``.`` or ``..`` once percent-decoded (``%2F``
    counts as a separator, and so does ``\\``)."""
    decoded = unquote_to_bytes(raw_rest)
    return any(segment in (b".", b"..") for segment in _SEGMENT_SPLIT.split(decoded))


def check_upstream_rest(raw_rest: str) -> None:
    """Refuse an ``/upstream`` sub-path that could climb out of the model's base URL.

    Raises:
        ProxyError: 400 ``invalid_request``.
    """
    if has_dot_segment(raw_rest):
        raise errors.invalid_request(
            "the /upstream path contains a '.' or '..' segment (also when percent-encoded)"
        )


def strip_api_key(query: bytes) -> bytes:
    """``query`` without its ``api_key`` parameters; the other parameters keep their bytes."""
    if b"api_key" not in query.lower() and b"%" not in query:
        return query
    kept = [
        part
        for part in query.split(b"&")
        if unquote_to_bytes(part.partition(b"=")[0].replace(b"+", b" ")) != b"api_key"
    ]
    return b"&".join(kept)


#: where the client's own query string is kept when ``api_key`` was stripped from the scope's
#: (the ``/upstream/{model}`` redirect sends the client back with its whole query)
CLIENT_QUERY = "llama_swap_trio.client_query"


def without_api_key(scope: Scope) -> Scope:
    """A shallow copy of ``scope`` whose query string has no ``api_key`` (``scope`` itself when
    there is none to remove)."""
    query: bytes = scope.get("query_string", b"")
    stripped = strip_api_key(query)
    if stripped == query:
        return scope
    return {**scope, "query_string": stripped, CLIENT_QUERY: query}
