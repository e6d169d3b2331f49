"""Browser safety (SPEC 6.1): which web pages may use the daemon, and which ``Host`` it answers.

A web page the user opens can send requests to ``http://127.0.0.1:8080`` (a form POST needs no
CORS at all, and a websocket is not covered by CORS), so reflecting every ``Origin`` let any site
drive an unprotected daemon: read its answers, load and unload models. Two rules close that:

- **Origin.** A request that carries an ``Origin`` is served only when that origin is allowed:
  every ``http(s)://localhost``, ``127.0.0.1`` and ``[::1]`` origin on any port, the daemon's own
  origin (the one that matches the request's own scheme and ``Host``: a page the daemon served),
  and ``server.cors_origins`` (``["*"]`` allows all). Any other origin gets 403
  ``origin_not_allowed`` before the request reaches a model or the management API; so does its
  ``OPTIONS`` preflight and its websocket handshake. An allowed origin gets
  ``access-control-allow-origin: <origin>`` and ``Vary: Origin``. Requests without ``Origin``
  (curl, SDKs, servers) are not browsers' cross-site requests and are not affected.
- **Host** (DNS rebinding). A page on ``evil.example`` whose DNS name is switched to
  ``127.0.0.1`` is same-origin with itself, so the Origin rule cannot see it; but its requests
  carry ``Host: evil.example``. While the daemon listens on loopback only, a ``Host`` that is not
  a loopback name (``localhost``, ``*.localhost``) or address, the listen address, or in
  ``server.allowed_hosts`` gets 421 ``host_not_allowed``. Listening beyond loopback, the daemon is
  reachable by every name anyway, and the check is off (``api_keys`` protect it then).

The Host rule comes first: a rebinding page is same-origin with itself. Both decisions are cached
per header value, so a request pays one pass over its headers and a dict lookup or two.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from llama_swap_trio.config.browser import ANY_ORIGIN, normalize_host, normalize_origin
from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.asgi import Scope, Send
from llama_swap_trio.http.errors import send_bytes

#: origins allowed on any port without configuration
LOOPBACK_ORIGIN_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: at most this many distinct header values are remembered per decision (then forgotten at once)
CACHE_SIZE = 256

_CORS_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_DEFAULT_HEADERS = b"Content-Type, Authorization, Accept, X-Requested-With"
_HEADER_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: the scheme a page served over this connection has
_PAGE_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def origin_not_allowed(origin: str) -> ProxyError:
    return ProxyError(
        403,
        "invalid_request_error",
        "origin_not_allowed",
        f"requests from the web origin '{origin}' are not allowed; add it to "
        "server.cors_origins to let pages of that origin use this daemon",
    )


def host_not_allowed(host: str) -> ProxyError:
    return ProxyError(
        421,
        "invalid_request_error",
        "host_not_allowed",
        f"the Host '{host}' is not served: this daemon listens on loopback only; add it to "
        "server.allowed_hosts if that name should reach it",
    )


def _strip_port(host: str) -> str:
    """``[::1]:8080`` -> ``[::1]``, ``ui.example:80`` -> ``ui.example``."""
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.partition(":")[0]


def is_loopback_name(name: str) -> bool:
    """True for ``localhost``, ``*.localhost`` and loopback addresses (brackets allowed)."""
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _is_loopback_origin(origin: str) -> bool:
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and _strip_port(rest) in LOOPBACK_ORIGIN_HOSTS


class BrowserSafety:
    """The Origin and Host rules of one configuration.

    Args:
        server: the ``[server]`` table (``cors_origins``, ``allowed_hosts``).
        listen_host: the host the daemon listens on, as given to ``--listen``; None when unknown
            (an app served by a test harness): the Host rule is then off.
    """

    def __init__(self, server: ServerConfig, listen_host: str | None) -> None:
        self.any_origin = ANY_ORIGIN in server.cors_origins
        self.origins = frozenset(server.cors_origins)
        self.hosts = frozenset(server.allowed_hosts)
        self.check_host = listen_host is not None and is_loopback_name(listen_host)
        listen = normalize_host(listen_host) if listen_host else None
        self.listen = _strip_port(listen) if listen else None
        self._host_ok: dict[bytes, bool] = {}
        self._origin_ok: dict[bytes, str | None] = {}

    # -- decisions -------------------------------------------------------------------------------

    def host_allowed(self, raw: bytes) -> bool:
        """Whether a request with ``Host: raw`` is served (always, unless on loopback only)."""
        if not self.check_host:
            return True
        known = self._host_ok.get(raw)
        if known is None:
            known = self._decide_host(raw)
            if len(self._host_ok) >= CACHE_SIZE:
                self._host_ok.clear()
            self._host_ok[raw] = known
        return known

    def _decide_host(self, raw: bytes) -> bool:
        host = normalize_host(raw.decode("latin-1"))
        if host is None:
            return False
        name = _strip_port(host)
        if is_loopback_name(name) or name == self.listen:
            return True
        return not self.hosts.isdisjoint((host, name))

    def allowed_origin(self, raw: bytes, scope: Scope, host: bytes | None) -> str | None:
        """The normalised origin when ``Origin: raw`` may use the daemon, else None."""
        known = self._origin_ok.get(raw, "")
        if known == "":  # not decided yet ("" is never an origin)
            known = self._decide_origin(raw)
            if len(self._origin_ok) >= CACHE_SIZE:
                self._origin_ok.clear()
            self._origin_ok[raw] = known
        if known is not None:
            return known
        return self._own_origin(raw, scope, host)

    def _decide_origin(self, raw: bytes) -> str | None:
        """The normalised origin when it is allowed whatever the request's ``Host``."""
        origin = normalize_origin(raw.decode("latin-1"))
        if self.any_origin:
            return origin or raw.decode("latin-1")
        if origin is not None and (_is_loopback_origin(origin) or origin in self.origins):
            return origin
        return None

    @staticmethod
    def _own_origin(raw: bytes, scope: Scope, host: bytes | None) -> str | None:
        """The origin when it is the daemon's own: a page served by this very address."""
        scheme = _PAGE_SCHEME.get(scope.get("scheme", "http"), "http")
        if host is None:
            return None
        own = normalize_origin(f"{scheme}://{host.decode('latin-1')}")
        origin = normalize_origin(raw.decode("latin-1"))
        return origin if origin is not None and origin == own else None

    def refusal(self, scope: Scope) -> tuple[ProxyError | None, bytes | None]:
        """``(error to answer, or None; the allowed Origin to echo, or None)`` for a request."""
        host: bytes | None = None
        origin: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                if host is None:
                    host = value
            elif name == b"origin":
                origin = value
        if host is not None and not self.host_allowed(host):
            return host_not_allowed(host.decode("latin-1")), None
        if origin is None:
            return None, None
        if self.allowed_origin(origin, scope, host) is None:
            return origin_not_allowed(origin.decode("latin-1")), None
        return None, origin


async def send_preflight(scope: Scope, send: Send, origin: bytes | None) -> None:
    """A CORS preflight answer for an allowed ``origin`` (or none), on any path, without a key."""
    requested = None
    for name, value in scope["headers"]:
        if name == b"access-control-request-headers":
            requested = value
            break
    allow_headers = _CORS_DEFAULT_HEADERS
    if requested is not None:
        names = [name.strip() for name in requested.split(b",")]
        valid = [name for name in names if _HEADER_TOKEN.match(name)]
        if valid:
            allow_headers = b", ".join(valid)
    headers = [
        (b"access-control-allow-origin", origin or b"*"),
        (b"access-control-allow-methods", _CORS_METHODS),
        (b"access-control-allow-headers", allow_headers),
        (b"access-control-max-age", b"86400"),
    ]
    if origin is not None:
        headers.append((b"vary", b"Origin"))
    await send_bytes(send, 204, b"", None, headers)


def with_allow_origin(send: Send, origin: bytes) -> Send:
    """``send`` that adds ``access-control-allow-origin: <origin>`` and ``Vary: Origin`` to the
    response head (unless the response already names an allowed origin)."""

    async def send_with_origin(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"access-control-allow-origin" for name, _ in headers):
                headers.append((b"access-control-allow-origin", origin))
                headers.append((b"vary", b"Origin"))
                message = {**message, "headers": headers}
        await send(message)

    return send_with_origin
