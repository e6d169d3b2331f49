"""Rendering of the proxy's own answers: the SPEC 3.3 error envelope and small send helpers.

Every error the proxy itself produces goes through :func:`send_error`, so the shape is the same
everywhere: JSON ``{"src": "llama-swap-trio", "error": {...}}``, or plain text when the client's
``Accept`` asks for ``text/plain`` and not for JSON (curl users reading errors in a terminal).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from llama_swap_trio.errors import SOURCE, ProxyError
from llama_swap_trio.http.asgi import Scope, Send
from llama_swap_trio.http.request import header

Headers = list[tuple[bytes, bytes]]

JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"


def wants_text(scope: Scope) -> bool:
    """True when ``Accept`` names ``text/plain`` and no JSON type."""
    accept = header(scope, b"accept")
    if accept is None:
        return False
    accept = accept.lower()
    return b"text/plain" in accept and b"json" not in accept


def error_bytes(error: ProxyError, *, as_text: bool = False) -> tuple[bytes, bytes]:
    """``(content type, body)`` of ``error``."""
    if as_text:
        # a message may quote what the client sent, lone surrogates included (valid in JSON)
        return TEXT_TYPE, f"{SOURCE}: {error.message}\n".encode("utf-8", "backslashreplace")
    return JSON_TYPE, json.dumps(error.body()).encode()


async def send_error(scope: Scope, send: Send, error: ProxyError) -> None:
    """Answer ``error`` with its status and headers (e.g. ``Retry-After``, ``WWW-Authenticate``)."""
    content_type, body = error_bytes(error, as_text=wants_text(scope))
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers]
    await send_bytes(send, error.status, body, content_type, extra)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A complete response in two ASGI messages."""
    head: Headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        head.append((b"content-type", content_type))
    head.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, value: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, status, json.dumps(value).encode(), JSON_TYPE, headers)


async def send_text(
    send: Send, status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, status, text.encode(), TEXT_TYPE, headers)
