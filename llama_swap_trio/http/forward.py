"""Relaying one HTTP request to an upstream and its response back (SPEC 3.1 "Forwarding").

The shape (research python-stack 2.4): the request's edge (edge/contract.py ``Edge``) watches
the client, so a client that leaves cancels the wait for the upstream; the upstream response head
is awaited with the lean client of edge/upstream_client.py and sent as an ASGI message; then the
edge relays the body as it arrives (no decompression, no buffering): one call, whichever server
serves the connection (the front door moves it with its relay hub, straight from socket to
socket; a hypercorn-served connection gets it as ``http.response.body`` messages). Either way a
token reaches the client as soon as the upstream sends it, and this module counts what passed
(usage, request_progress, the time to the first byte) from the edge's ``on_data`` calls.

Errors have two regimes:

- **before the response head** was sent to the client, a failure is a
  :class:`~llama_swap_trio.errors.ProxyError` the caller renders: refused/reset connection 502,
  head timeout 504. A connection that closes before any response byte (a stale pooled one,
  encode/httpx#2983) is retried once, as nothing was sent to the client yet.
- **after the head**, the status is on the wire; an upstream that dies mid-stream is reported in
  :attr:`ForwardResult.upstream_failed` and the client's response is left unfinished on purpose.
  When the ASGI app returns, the server sees a response that never sent its last body message
  and closes the connection, so the client sees a truncated body (an incomplete chunked read)
  and not a complete-looking one, and never a hang. Go's ReverseProxy (llama-swap) does the same.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from llama_swap_trio import errors
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.edge.contract import CLIENT_GONE, DONE, UPSTREAM_FAILED, Edge, open_edge
from llama_swap_trio.edge.upstream_client import (
    BrokenResponse,
    ClosedBeforeResponse,
    ConnectFailed,
    ConnectTimedOut,
    UpstreamClient,
    UpstreamResponse,
)
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.http.usage import UsageSniffer
from llama_swap_trio.routing.api import Grant

if TYPE_CHECKING:
    from llama_swap_trio.observe.requests import RequestLife

log = logging.getLogger(__name__)

#: hop-by-hop headers (RFC 9110 7.6.1) and the ones we recompute; never forwarded either way
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: request headers we set ourselves: host (the upstream's), content-length (of the rewritten
#: body), expect (the body was already read in full, there is nothing to continue)
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
#: the server adds its own date header (hypercorn a server header too); forwarding the upstream's
#: would duplicate them
_RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}

#: ``ForwardResult.status`` when the client went away before a response head was relayed
#: (nginx's convention)
CLIENT_CLOSED = 499
#: bytes of a non-2xx upstream body read to build the error event in loading-state mode
MAX_ERROR_BODY = 64 * 1024


@attrs.frozen
class ForwardResult:
    """How a forwarded request ended; the app publishes the SPEC 5 ``request`` event from it.

    Attributes:
        status: the upstream's status; ``CLIENT_CLOSED`` (499) when the client left before one
            arrived (in loading-state mode: the status of the error event, when one was sent).
        ttfb_ms: from the start of forwarding to the first body byte relayed (to the head when
            the body is empty); None when no response arrived.
        duration_ms: from the start of forwarding to the end of the relay.
        client_disconnected: the client went away before the response was complete.
        upstream_failed: the upstream broke the response off (head already sent: the client's
            response was left truncated, see the module docstring).
        first_byte_at: trio time of ``ttfb_ms``'s end (None with it), for times from arrival.
        error: the SPEC 3.3 code of the error the client got, when the proxy answered one.
    """

    status: int
    ttfb_ms: float | None
    duration_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None
    client_disconnected: bool = False
    upstream_failed: bool = False
    first_byte_at: float | None = None
    error: str | None = None


# -- request and response headers ----------------------------------------------------------------


def target_of(scope: Scope) -> str:
    """The request target (path and query) of ``scope``, percent-encoding kept (``%2F`` stays)."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else str(scope["path"])
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection`` (hop-by-hop by declaration, RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def request_headers(scope: Scope, body: bytes) -> list[tuple[bytes, bytes]]:
    """The client's headers as sent to the upstream.

    Hop-by-hop headers are dropped; ``Authorization`` and ``x-api-key`` are kept (as llama-swap,
    #839); ``content-length`` is that of ``body`` (which may have been rewritten); the client's
    address is appended to ``x-forwarded-for``. ``host`` is left to the client (the upstream's).
    """
    incoming: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
    drop = _REQUEST_DROP | _connection_tokens(incoming)
    out: list[tuple[bytes, bytes]] = []
    had_body = bool(body)
    forwarded_for: list[bytes] = []
    for name, value in incoming:
        lname = name.lower()
        if lname in (b"content-length", b"transfer-encoding"):
            had_body = True
        if lname == b"x-forwarded-for":
            forwarded_for.append(value)
        elif lname not in drop:
            out.append((lname, value))
    if had_body:
        out.append((b"content-length", str(len(body)).encode("ascii")))
    client = scope.get("client")
    if client:
        forwarded_for.append(str(client[0]).encode("latin-1"))
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    return out


def response_headers(response: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as sent to the client (SSE also gets ``x-accel-buffering: no``).

    Names keep the upstream's spelling. ``Content-Length`` is rewritten as the one length the
    body is actually delimited by (a list like ``5, 5`` becomes ``5``) and dropped when the body
    is chunked or runs to the close (RFC 9112 6.3: Transfer-Encoding overrides it); the server
    then frames the body itself. Bodiless answers carry no length that disagrees with having no
    body (SPEC 6.1): none on 1xx and 204 (RFC 9110 8.6), and on HEAD and 304 only a valid one
    (the length a GET would get).
    """
    raw = response.headers
    drop = _RESPONSE_DROP | _connection_tokens(raw) if _has_connection(raw) else _RESPONSE_DROP
    length = response.content_length
    if length is None and not response.has_body:
        length = _bodiless_length(response)
    drop = drop | {b"content-length"}
    out = [(name, value) for name, value in raw if name.lower() not in drop]
    if length is not None:
        out.append((b"content-length", b"%d" % length))
    if _is_sse(response) and response.header(b"x-accel-buffering") is None:
        # tells nginx and friends in front of us not to buffer the token stream (llama-swap #236)
        out.append((b"x-accel-buffering", b"no"))
    return out


def _bodiless_length(response: UpstreamResponse) -> int | None:
    """The ``Content-Length`` a bodiless answer may pass on: HEAD and 304 only, one valid value."""
    status = response.status_code
    if status < 200 or status == 204:
        return None
    values = {
        v.strip()
        for name, value in response.headers
        if name.lower() == b"content-length"
        for v in value.split(b",")
    }
    if len(values) != 1:
        return None
    (value,) = values
    return int(value) if value.isdigit() and len(value) <= 18 else None


def _has_connection(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"connection" for name, _ in headers)


def _is_sse(response: UpstreamResponse) -> bool:
    content_type = response.header(b"content-type") or b""
    return content_type.split(b";", 1)[0].strip().lower() == b"text/event-stream"


# -- forwarding ------------------------------------------------------------------------------------


async def forward_http(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    grant: Grant,
    body: bytes,
    pool: ClientPool,
    target: str | None = None,
    headers_sent: bool = False,
    edge: Edge | None = None,
    life: RequestLife | None = None,
) -> ForwardResult:
    """Forward the request in ``scope`` (its body already read: ``body``) to ``grant``'s upstream.

    Args:
        scope, receive, send: the ASGI request; ``receive`` is read here (a disconnect watcher)
            unless ``edge`` is given, so the caller must not read it concurrently.
        grant: the router's grant; ``grant.model.proxy`` is the upstream base URL and
            ``grant.upstream.generation`` picks the connection pool.
        body: the request body to send (possibly rewritten); content-length is set to its size.
        pool: the upstream clients.
        target: path and query to request on the upstream; default the client's own
            (``raw_path`` + query string). ``/upstream/{model}/rest`` passes ``/rest?query``.
        headers_sent: the caller already sent a 200 SSE head (loading-state mode): relay only
            body bytes; a non-2xx upstream answer becomes ``data: {"error": ...}`` and
            ``data: [DONE]`` events.
        edge: the request's edge (edge/contract.py ``open_edge``) when the caller already has
            it; when None, it is obtained here.
        life: the request's feed record; it gets the relay's accounting (``request_progress``).

    Returns:
        How it ended; see :class:`ForwardResult`.

    Raises:
        ProxyError: before anything of the response was sent: 502 ``upstream_error`` (connection
            refused or reset, a broken response), 504 ``gateway_timeout`` (connect or response
            head timeout).
    """
    if edge is not None:
        return await _forward(scope, send, grant, body, pool, target, headers_sent, edge, life)
    async with open_edge(scope, receive, send) as own_edge:
        return await _forward(scope, send, grant, body, pool, target, headers_sent, own_edge, life)


@attrs.define
class _Relay:
    """Mutable facts gathered while relaying, turned into a :class:`ForwardResult` at the end."""

    start: float
    status: int = CLIENT_CLOSED
    first_byte: float | None = None
    upstream_failed: bool = False
    #: the whole body was passed on (a server then reports http.disconnect to the app, which is
    #: the normal end of the exchange, not a client that went away)
    complete: bool = False
    #: the client went away before the response was complete
    disconnected: bool = False
    sse: bool = False
    sniffer: UsageSniffer | None = None

    def on_data(self, piece: bytes) -> None:
        """The edge relayed ``piece`` of the body (``Edge.relay``'s accounting callback)."""
        if self.first_byte is None:
            self.first_byte = trio.current_time()
        sniffer = self.sniffer
        assert sniffer is not None
        sniffer.feed(piece)

    def result(self) -> ForwardResult:
        end = trio.current_time()
        usage = self.sniffer.result() if self.sniffer is not None else None
        tps = usage.tokens_per_second if usage is not None else None
        completion = usage.completion_tokens if usage is not None else None
        if tps is None and completion and self.first_byte is not None:
            # A stream's rate counts from its first token; a whole JSON body arrives at once,
            # so the whole request time (prompt processing included) is the best we have.
            elapsed = end - (self.first_byte if self.sse else self.start)
            tps = completion / elapsed if elapsed > 0 else None
        return ForwardResult(
            status=self.status,
            ttfb_ms=(self.first_byte - self.start) * 1000 if self.first_byte is not None else None,
            duration_ms=(end - self.start) * 1000,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=completion,
            tokens_per_second=tps,
            client_disconnected=self.disconnected and not self.complete,
            upstream_failed=self.upstream_failed,
            first_byte_at=self.first_byte,
        )


async def _forward(
    scope: Scope,
    send: Send,
    grant: Grant,
    body: bytes,
    pool: ClientPool,
    target: str | None,
    headers_sent: bool,
    edge: Edge,
    life: RequestLife | None,
) -> ForwardResult:
    model = grant.model
    relay = _Relay(start=trio.current_time())
    path = target if target is not None else target_of(scope)
    headers = request_headers(scope, body)
    method = str(scope.get("method", "GET"))
    client = await pool.client_for(grant)
    response: UpstreamResponse | None = None
    error_body: bytes | None = None
    try:
        # A client that leaves cancels the wait for the upstream or a send to it; the cancelled
        # request closes its connection, so the upstream sees the disconnect and stops
        # generating. The relay after the head watches the client itself (Edge.relay).
        with edge.watch.cancel_on_disconnect() as guard:
            response = await _open(client, model, method, path, headers, body)
            relay.status = response.status_code
            if headers_sent and not 200 <= response.status_code < 300:
                error_body = await _read_error_body(response)
            else:
                await _start_relay(send, response, relay, headers_sent, life)
        if guard.cancelled_caught:
            relay.disconnected = True
        elif error_body is not None:
            relay.first_byte = trio.current_time()
            relay.complete = True
            await send_sse_error_and_done(send, _error_object(model, relay.status, error_body))
        else:
            assert response is not None
            _settle(relay, await edge.relay(response, relay.on_data))
    finally:
        # Closing an unfinished response closes its connection (synchronously), so the upstream
        # sees the disconnect at once and stops generating; a finished one goes back to the pool.
        if response is not None:
            response.close()
    return relay.result()


async def _open(
    client: UpstreamClient,
    model: ModelConfig,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> UpstreamResponse:
    """Send the request and wait for the response head; errors become ProxyErrors."""
    head_timeout = model.timeouts.response_header
    deadline = trio.current_time() + head_timeout if head_timeout > 0 else math.inf
    for attempt in (1, 2):
        try:
            if deadline == math.inf:  # no head timeout: no cancel scope (hot path)
                return await client.request(method, path, headers, body)
            with trio.move_on_at(deadline):
                return await client.request(method, path, headers, body)
            raise errors.gateway_timeout(
                model.id, f"no response head from the upstream within {head_timeout:g}s"
            )
        except ClosedBeforeResponse as exc:
            if attempt == 1:
                log.debug("%s: retrying once after %r (stale pooled connection?)", model.id, exc)
                continue
            raise errors.upstream_error(
                model.id, f"the upstream closed the connection before answering ({exc})"
            ) from exc
        except ConnectTimedOut as exc:
            raise errors.gateway_timeout(
                model.id, f"connecting to {model.proxy} timed out ({exc})"
            ) from exc
        except ConnectFailed as exc:
            raise errors.upstream_error(
                model.id, f"cannot connect to {model.proxy} ({exc or 'connection refused'})"
            ) from exc
        except BrokenResponse as exc:
            raise errors.upstream_error(
                model.id, f"request to the upstream failed ({type(exc).__name__}: {exc})"
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _start_relay(
    send: Send,
    response: UpstreamResponse,
    relay: _Relay,
    headers_sent: bool,
    life: RequestLife | None,
) -> None:
    """Set up the accounting of the body (usage, request_progress) and send the response head
    (unless already sent)."""
    relay.sse = _is_sse(response)
    sniffer = relay.sniffer = UsageSniffer(
        (response.header(b"content-type") or b"").decode("latin-1"),
        (response.header(b"content-encoding") or b"").decode("latin-1"),
    )
    if life is not None:
        life.sniffer = sniffer
    if not headers_sent:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response),
            }
        )


def _settle(relay: _Relay, outcome: str) -> None:
    """Record how the edge's relay of the body ended."""
    if outcome == DONE:
        if relay.first_byte is None:  # an empty body: its end is its first byte
            relay.first_byte = trio.current_time()
        relay.complete = True
    elif outcome == UPSTREAM_FAILED:
        relay.upstream_failed = True  # the client's response is left truncated (see above)
    else:
        assert outcome == CLIENT_GONE, outcome
        relay.disconnected = True


async def _read_error_body(response: UpstreamResponse) -> bytes:
    """Loading-state mode, a non-2xx answer: read it to the end (so the connection can be
    reused), keeping the first MAX_ERROR_BODY bytes to report."""
    text = bytearray()
    try:
        while (chunk := await response.next_chunk()) is not None:
            text += chunk[: max(0, MAX_ERROR_BODY - len(text))]
    except BrokenResponse:
        pass  # report what arrived
    return bytes(text)


def _error_object(model: ModelConfig, status: int, body: bytes) -> dict[str, object]:
    """The upstream's own OpenAI error object when it sent one, else a 502-style one."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict):
        inner = value.get("error")
        if isinstance(inner, dict):
            return inner
        if isinstance(inner, str):
            message = inner
        else:
            message = str(value.get("message") or value.get("detail") or "")
    else:
        message = body.decode("utf-8", "replace").strip()
    detail = f"the upstream answered {status}" + (f": {message[:500]}" if message else "")
    proxy_error = errors.upstream_error(model.id, detail)
    return {
        "message": proxy_error.message,
        "type": proxy_error.type,
        "param": None,
        "code": proxy_error.code,
    }


async def send_sse_error_and_done(send: Send, error: object) -> None:
    """Send ``data: {"error": ...}`` then ``data: [DONE]`` and end the response."""
    event = b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
