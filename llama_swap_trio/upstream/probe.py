"""Readiness probes: is the health endpoint answering 200, and is a port already taken?

A probe is one raw ``GET`` over a fresh TCP connection, bounded by its own timeout. That is
cheaper than an HTTP client (no pool, no proxy settings from the environment: a probe of
``127.0.0.1`` must never go through ``$HTTP_PROXY``), and it is all a health check needs: the
status code of the first response line. ``https`` URLs, rare for a local server, go through httpx
(``trust_env=False``) instead.
"""

from __future__ import annotations

import urllib.parse

import attrs
import httpx
import trio

#: seconds one probe may take before it counts as "not ready yet"
PROBE_TIMEOUT = 2.0
#: seconds a connect may take when we only check whether a port is already taken
PORT_CHECK_TIMEOUT = 0.5


@attrs.frozen
class Target:
    scheme: str
    host: str
    port: int
    #: path prefix of the proxy URL (``""`` or ``/prefix``), without a trailing slash
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse a ``proxy`` URL such as ``http://127.0.0.1:5800``.

        Raises:
            ValueError: not an http(s) URL with a host.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}{path}"


async def health_status(target: Target, path: str, within: float = PROBE_TIMEOUT) -> int | None:
    """The HTTP status of ``GET <target><path>``, or None when nothing usable answered in time."""
    with trio.move_on_after(within):
        try:
            if target.scheme == "https":
                return await _https_status(target.url(path), within)
            return await _http_status(target, target.prefix + path)
        except (OSError, trio.BrokenResourceError, httpx.HTTPError, ValueError):
            return None
    return None


async def _http_status(target: Target, path: str) -> int | None:
    stream = await trio.open_tcp_stream(target.host, target.port)
    async with stream:
        host = f"[{target.host}]" if ":" in target.host else target.host
        request = (
            f"GET {path or '/'} HTTP/1.1\r\nHost: {host}:{target.port}\r\n"
            "User-Agent: llama-swap-trio health check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        await stream.send_all(request.encode("latin-1"))
        head = bytearray()
        while b"\r\n" not in head and len(head) < 4096:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
        # "HTTP/1.1 200 OK"
        fields = bytes(head).split(b"\r\n", 1)[0].split()
        if len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1].isdigit():
            return int(fields[1])
        return None


async def _https_status(url: str, within: float) -> int:
    async with httpx.AsyncClient(trust_env=False, verify=False, timeout=within) as client:
        response = await client.get(url)
        return response.status_code


async def port_answers(host: str, port: int, within: float = PORT_CHECK_TIMEOUT) -> bool:
    """True when something accepts a TCP connection on ``host:port`` (the port is taken)."""
    with trio.move_on_after(within):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False  # refused (free), unreachable, unresolvable: nobody to proxy to by mistake
        await stream.aclose()
        return True
    # A connect that neither succeeds nor is refused in time (filtered port): not "answering".
    return False
