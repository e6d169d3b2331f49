"""API keys (SPEC 3.6): which requests carry a valid key.

A key may come as ``Authorization: Bearer KEY``, as the password of ``Authorization: Basic``, as
``x-api-key: KEY`` or, for browsers (which cannot set headers on websockets or EventSource), as
``?api_key=KEY``. A request passes when any credential it presents matches any configured key,
so a client may send its upstream's own ``Authorization`` and the proxy key in ``x-api-key``.

Keys are compared with :func:`hmac.compare_digest` against every configured key, without an early
exit, so the time taken says nothing about which key or how much of it matched. Keys are never
logged: nothing here logs at all.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from urllib.parse import parse_qsl

from llama_swap_trio.http.asgi import Scope


def presented_keys(scope: Scope) -> list[bytes]:
    """Every credential the request presents (possibly none)."""
    found: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).strip().partition(b" ")
            scheme = scheme.lower()
            credentials = credentials.strip()
            if scheme == b"bearer" and credentials:
                found.append(credentials)
            elif scheme == b"basic" and credentials:
                try:
                    decoded = base64.b64decode(credentials, validate=True)
                except (binascii.Error, ValueError):
                    continue
                found.append(decoded.partition(b":")[2])
        elif name == b"x-api-key":
            found.append(bytes(value).strip())
    query = scope.get("query_string", b"")
    if b"api_key=" in query:
        text = query.decode("utf-8", errors="replace")
        for key, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
            if key == "api_key":
                found.append(value.encode("utf-8"))
    return found


def is_authorized(scope: Scope, keys: Sequence[bytes]) -> bool:
    """True when no keys are configured, or when a presented credential matches one of them."""
    if not keys:
        return True
    matched = False
    for candidate in presented_keys(scope):
        for key in keys:
            # no short-circuit: every pair is compared, in constant time each
            matched |= hmac.compare_digest(candidate, key)
    return matched
