"""Websocket passthrough for ``/upstream/{model}/...`` (SPEC 3.2; llama-swap-features 1.17).

httpx cannot proxy websockets, and hypercorn hands us a websocket as its own ASGI scope, so the
tunnel is message-level: trio-websocket opens the upstream connection, and two pumps copy text and
binary messages both ways until either side closes. The close code (and reason) of the side that
closed is passed on to the other.

The upstream handshake happens *before* the client is accepted, so a refusal can still be told to
the client as an HTTP answer: 502 with our JSON error through the ``websocket.http.response``
extension when the server offers it (hypercorn does), else a plain close before accept (which
hypercorn answers with 403).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from llama_swap_trio import errors
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.forward import HOP_BY_HOP
from llama_swap_trio.routing.api import Grant

log = logging.getLogger(__name__)

#: same as hypercorn's default ``websocket_max_message_size``
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: seconds the closing handshake with either side may take
CLOSE_TIMEOUT = 2.0
#: default seconds for the upstream handshake when the model sets no connect timeout
DEFAULT_CONNECT_TIMEOUT = 60.0

#: close codes that must never be sent in a close frame (RFC 6455 7.4.1), and what to send instead
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}

#: the handshake headers trio-websocket sets itself
_HANDSHAKE = frozenset(
    {
        b"host",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)


def upstream_ws_url(proxy: str, target: str) -> str:
    """``ws://host:port`` (``wss`` for https) + the proxy's base path + ``target``."""
    parts = urlsplit(proxy)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{target}"


def _sendable(code: int | None) -> int:
    if code is None:
        return 1000
    return _UNSENDABLE.get(code, code)


async def tunnel_websocket(
    scope: Scope, receive: Receive, send: Send, *, grant: Grant, target: str
) -> None:
    """Tunnel the websocket in ``scope`` to ``grant``'s upstream at ``target`` (path + query).

    Returns when either side closed (or the upstream refused). The caller must not have read
    ``receive`` (the ``websocket.connect`` message is read here) nor sent anything.
    """
    first = await receive()
    if first["type"] != "websocket.connect":
        return  # the client left before the handshake
    model = grant.model
    url = upstream_ws_url(model.proxy, target)
    incoming: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
    headers = [(k.lower(), v) for k, v in incoming if k.lower() not in HOP_BY_HOP | _HANDSHAKE]
    accepted = False
    upstream: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            url,
            subprotocols=list(scope.get("subprotocols") or ()),
            extra_headers=headers,
            max_message_size=MAX_MESSAGE_SIZE,
            connect_timeout=model.timeouts.connect or DEFAULT_CONNECT_TIMEOUT,
            disconnect_timeout=CLOSE_TIMEOUT,
        ) as upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            accepted = True
            await _pump(receive, send, upstream)
    except (OSError, HandshakeError) as exc:
        if accepted:
            # the tunnel was up: the upstream connection broke while closing
            log.debug("%s: websocket tunnel ended with %r", model.id, exc)
            return
        log.info("%s: upstream refused the websocket at %s: %r", model.id, url, exc)
        await _deny(scope, send, errors.upstream_error(model.id, _refusal(exc)))
    finally:
        if upstream is not None:
            await close_client_stream(upstream)


async def close_client_stream(ws: WebSocketConnection) -> None:
    """Close the TCP stream under a trio-websocket *client* connection.

    trio-websocket 0.12 never closes it when the server started the closing handshake: the
    reader task stops at EOF without closing the stream, and ``aclose()`` returns early because
    a close reason is already set. The socket would leak until garbage collection. Closing a
    trio stream twice is harmless, so this is safe whichever side closed.
    """
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            await stream.aclose()


def _refusal(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"the upstream refused the websocket (HTTP {status})"
    return f"cannot open a websocket to the upstream ({type(exc).__name__}: {exc})"


async def _deny(scope: Scope, send: Send, error: errors.ProxyError) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error.body()).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1011})


async def _pump(receive: Receive, send: Send, upstream: WebSocketConnection) -> None:
    """Copy messages both ways until one side closes; then close the other with its code."""
    async with trio.open_nursery() as nursery:

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    text = message.get("text")
                    data: str | bytes = text if text is not None else message.get("bytes") or b""
                    try:
                        await upstream.send_message(data)
                    except ConnectionClosed:
                        return  # the other pump sees the close and ends the tunnel
                elif message["type"] == "websocket.disconnect":
                    code = _sendable(message.get("code"))
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await upstream.aclose(code=code)
                    nursery.cancel_scope.cancel()
                    return

        async def upstream_to_client() -> None:
            try:
                while True:
                    data = await upstream.get_message()
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except ConnectionClosed as closed:
                reason = closed.reason
                await send(
                    {
                        "type": "websocket.close",
                        "code": _sendable(reason.code if reason else None),
                        "reason": (reason.reason if reason else None) or "",
                    }
                )
                nursery.cancel_scope.cancel()

        nursery.start_soon(client_to_upstream)
        nursery.start_soon(upstream_to_client)
