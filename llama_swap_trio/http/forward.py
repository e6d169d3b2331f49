"""Relaying one HTTP request to an upstream and its response back (SPEC 3.1 "Forwarding").

The shape (research python-stack 2.4): a watcher task on ``receive()`` next to the relay; the
upstream response is opened with ``client.send(stream=True)`` and passed on chunk by chunk with
``aiter_raw`` (no decompression, no buffering). Hypercorn writes each ``http.response.body``
message to the socket at once, so a token reaches the client as soon as the upstream sends it.

Errors have two regimes:

- **before the response head** was sent to the client, a failure is a
  :class:`~llama_swap_trio.errors.ProxyError` the caller renders: refused/reset connection 502,
  head timeout 504. A stale pooled connection ("Server disconnected without sending a
  response", encode/httpx#2983) is retried once, as nothing was sent yet.
- **after the head**, the status is on the wire; an upstream that dies mid-stream is reported in
  :attr:`ForwardResult.upstream_failed` and the client's response is left unfinished on purpose.
  When the ASGI app returns, hypercorn sees a response that never sent its last body message and
  closes the connection, so the client sees a truncated body (an incomplete chunked read) and not
  a complete-looking one, and never a hang. This is what Go's ReverseProxy (llama-swap) does too.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator

import attrs
import httpx
import trio

from llama_swap_trio import errors
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.disconnect import ClientWatch, watching
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.http.usage import UsageSniffer
from llama_swap_trio.routing.api import Grant

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
#: hypercorn adds its own date and server headers; forwarding the upstream's would duplicate them
_RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}

#: ``ForwardResult.status`` when the client went away before a response head was relayed
#: (nginx's convention)
CLIENT_CLOSED = 499
#: bytes of a non-2xx upstream body read to build the error event in loading-state mode
MAX_ERROR_BODY = 64 * 1024
#: seconds allowed to close an upstream response (closing a socket; never a network wait)
CLOSE_TIMEOUT = 2.0
#: transport errors that may mean a stale pooled connection; retried once before the head
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


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
    """

    status: int
    ttfb_ms: float | None
    duration_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None
    client_disconnected: bool = False
    upstream_failed: bool = False


# -- request and response headers ----------------------------------------------------------------


def target_of(scope: Scope) -> str:
    """The request target (path and query) of ``scope``, percent-encoding kept (``%2F`` stays)."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else str(scope["path"])
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
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
    address is appended to ``x-forwarded-for``. ``host`` is left to httpx (the upstream's).
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


def response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as sent to the client (SSE also gets ``x-accel-buffering: no``)."""
    raw = response.headers.raw
    drop = _RESPONSE_DROP | _connection_tokens(raw)
    out = [(name.lower(), value) for name, value in raw if name.lower() not in drop]
    if _is_sse(response) and not any(name == b"x-accel-buffering" for name, _ in out):
        # tells nginx and friends in front of us not to buffer the token stream (llama-swap #236)
        out.append((b"x-accel-buffering", b"no"))
    return out


def _is_sse(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


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
    watch: ClientWatch | None = None,
) -> ForwardResult:
    """Forward the request in ``scope`` (its body already read: ``body``) to ``grant``'s upstream.

    Args:
        scope, receive, send: the ASGI request; ``receive`` is read here (a disconnect watcher),
            so the caller must not read it concurrently.
        grant: the router's grant; ``grant.model.proxy`` is the upstream base URL and
            ``grant.upstream.generation`` picks the connection pool.
        body: the request body to send (possibly rewritten); content-length is set to its size.
        pool: the upstream clients.
        target: path and query to request on the upstream; default the client's own
            (``raw_path`` + query string). ``/upstream/{model}/rest`` passes ``/rest?query``.
        headers_sent: the caller already sent a 200 SSE head (loading-state mode): relay only
            body bytes; a non-2xx upstream answer becomes ``data: {"error": ...}`` and
            ``data: [DONE]`` events.
        watch: a disconnect watcher the caller already runs on ``receive`` (loading-state mode);
            when None, one is started here.

    Returns:
        How it ended; see :class:`ForwardResult`.

    Raises:
        ProxyError: before anything of the response was sent: 502 ``upstream_error`` (connection
            refused or reset, a broken response), 504 ``gateway_timeout`` (connect or response
            head timeout).
    """
    if watch is not None:
        return await _forward(scope, send, grant, body, pool, target, headers_sent, watch)
    async with watching(receive) as own_watch:
        return await _forward(scope, send, grant, body, pool, target, headers_sent, own_watch)


@attrs.define
class _Relay:
    """Mutable facts gathered while relaying, turned into a :class:`ForwardResult` at the end."""

    start: float
    status: int = CLIENT_CLOSED
    first_byte: float | None = None
    upstream_failed: bool = False
    #: the last body message is being sent: hypercorn then reports http.disconnect to the app,
    #: which is the normal end of the exchange, not a client that went away
    complete: bool = False
    #: the client went away before the response was complete
    disconnected: bool = False
    sse: bool = False
    sniffer: UsageSniffer | None = None

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
        )


async def _forward(
    scope: Scope,
    send: Send,
    grant: Grant,
    body: bytes,
    pool: ClientPool,
    target: str | None,
    headers_sent: bool,
    watch: ClientWatch,
) -> ForwardResult:
    model = grant.model
    relay = _Relay(start=trio.current_time())
    url = model.proxy.rstrip("/") + (target if target is not None else target_of(scope))
    headers = request_headers(scope, body)
    method = str(scope.get("method", "GET"))
    client = await pool.client_for(grant)
    with watch.cancel_on_disconnect() as opening:
        response = await _open(client, model, method, url, headers, body)
    if opening.cancelled_caught:
        # the client left while we waited for the head; the cancelled send closed the connection
        relay.disconnected = True
        return relay.result()
    try:
        relay.status = response.status_code
        if headers_sent and not 200 <= response.status_code < 300:
            await _send_error_events(send, model, response, relay, watch)
        else:
            await _relay(send, response, relay, headers_sent, watch)
    except _ClientGone:
        relay.disconnected = True
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            # Closing an unfinished stream closes its connection, so the upstream sees the
            # disconnect at once and stops generating (verified < 1 ms, research 2.4).
            await response.aclose()
    return relay.result()


class _ClientGone(Exception):
    """The client disconnected while we waited for the upstream's next chunk."""


async def _next_chunk(chunks: AsyncIterator[bytes], watch: ClientWatch) -> bytes | None:
    """The upstream's next body chunk (None at the end), abandoned if the client leaves.

    Only the wait for the upstream is cancelled on disconnect, never a send to the client: a
    cancellation that lands inside httpx's nested body generators unwinds and finishes them all,
    while one that lands in our loop body would leave them suspended, to be finalized (with a
    ResourceWarning) by the garbage collector.

    Raises:
        _ClientGone: the client disconnected.
    """
    with watch.cancel_on_disconnect():
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None
    raise _ClientGone


async def _open(
    client: httpx.AsyncClient,
    model: ModelConfig,
    method: str,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> httpx.Response:
    """Send the request and wait for the response head; errors become ProxyErrors."""
    head_timeout = model.timeouts.response_header
    deadline = trio.current_time() + head_timeout if head_timeout > 0 else math.inf
    for attempt in (1, 2):
        request = client.build_request(method, url, headers=headers, content=body)
        try:
            with trio.move_on_at(deadline):
                return await client.send(request, stream=True)
            raise errors.gateway_timeout(
                model.id, f"no response head from the upstream within {head_timeout:g}s"
            )
        except _STALE as exc:
            if attempt == 1:
                log.debug("%s: retrying once after %r (stale pooled connection?)", model.id, exc)
                continue
            raise errors.upstream_error(
                model.id, f"the upstream closed the connection before answering ({exc})"
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise errors.gateway_timeout(
                model.id, f"connecting to {model.proxy} timed out ({exc})"
            ) from exc
        except httpx.ConnectError as exc:
            raise errors.upstream_error(
                model.id, f"cannot connect to {model.proxy} ({exc or 'connection refused'})"
            ) from exc
        except httpx.HTTPError as exc:
            raise errors.upstream_error(
                model.id, f"request to the upstream failed ({type(exc).__name__}: {exc})"
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _relay(
    send: Send, response: httpx.Response, relay: _Relay, headers_sent: bool, watch: ClientWatch
) -> None:
    """Pass the response head (unless already sent) and body on as they arrive."""
    relay.sse = _is_sse(response)
    sniffer = relay.sniffer = UsageSniffer(
        response.headers.get("content-type", ""), response.headers.get("content-encoding", "")
    )
    if not headers_sent:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response),
            }
        )
    chunks = response.aiter_raw()
    try:
        while (chunk := await _next_chunk(chunks, watch)) is not None:
            if relay.first_byte is None:
                relay.first_byte = trio.current_time()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sniffer.feed(chunk)  # after the send: accounting never delays a token
    except httpx.TransportError as exc:
        # Leave the client's response unfinished: hypercorn closes the connection when the app
        # returns, so the client sees a truncated body rather than a complete-looking one.
        log.warning("upstream broke off its response: %r", exc)
        relay.upstream_failed = True
        return
    if relay.first_byte is None:
        relay.first_byte = trio.current_time()
    relay.complete = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_error_events(
    send: Send, model: ModelConfig, response: httpx.Response, relay: _Relay, watch: ClientWatch
) -> None:
    """Loading-state mode: the 200 head is out; report a non-2xx upstream answer as SSE events."""
    text = bytearray()
    chunks = response.aiter_raw()
    try:
        # read to the end (so httpx's generators finish), keeping the first MAX_ERROR_BODY bytes
        while (chunk := await _next_chunk(chunks, watch)) is not None:
            text += chunk[: max(0, MAX_ERROR_BODY - len(text))]
    except httpx.TransportError:
        pass  # report what arrived
    error = _error_object(model, response.status_code, bytes(text))
    relay.first_byte = trio.current_time()
    relay.complete = True
    await send_sse_error_and_done(send, error)


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
