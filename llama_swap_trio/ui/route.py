"""``GET /`` and ``/ui/...``: the web UI's static files, served from the package (SPEC 6.3).

- ``/`` redirects (302) to ``/ui/``, ``/ui`` to ``/ui/`` (301, the query kept);
- ``/ui/`` and ``/ui/index.html`` are the single-page app; the app routes with the URL's hash
  (``#/models``), and an extension-less path such as ``/ui/models`` also gets ``index.html`` (so a
  bookmark of one works, as in llama-swap); any other ``/ui/`` path is a real file or a 404.
- Only ``GET`` and ``HEAD`` (405 otherwise, with ``Allow``).

**No key for these paths**, even with ``api_keys`` set: the files are the same for everyone and
hold no data (no model list, no log, nothing of the config); every data call the page makes
(``/v1/models``, ``/api/...``, the feed, the logs) needs the key as usual, and the page asks for it.
Serving the shell without a key is what lets it ask.

Caching: the files carry no version in their names (no build step), so every answer says
``cache-control: no-cache`` with a strong ``etag`` (a hash of the content): a browser revalidates
and gets a body-less 304 while the daemon's version is unchanged, and the new files as soon as it
is not. The HTML also carries a content security policy that allows only this origin's scripts,
styles and connections (the page never talks to another host) and forbids framing.

The files are read once, at the first request, into memory (the whole UI is about 100 KB).
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import NamedTuple

from llama_swap_trio import errors
from llama_swap_trio.http.asgi import Scope, Send
from llama_swap_trio.http.errors import send_bytes, send_error
from llama_swap_trio.http.request import header

UI_PREFIX = "/ui/"
INDEX = "index.html"

#: content type by file extension; a file of any other kind is not served
CONTENT_TYPES: dict[str, bytes] = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
}

#: the page's content security policy: this origin only ('self' covers ws:/wss: of it too)
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    b"frame-ancestors 'none'"
)

_COMMON_HEADERS = (
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_HTML_HEADERS = (
    (b"content-security-policy", CSP),
    (b"x-frame-options", b"DENY"),
)


class StaticFile(NamedTuple):
    body: bytes
    content_type: bytes
    etag: bytes


def is_ui_path(path: str) -> bool:
    """True for the paths this module answers: ``/``, ``/ui`` and everything under ``/ui/``."""
    return path in ("/", "/ui") or path.startswith(UI_PREFIX)


@cache
def static_files() -> dict[str, StaticFile]:
    """Every file under the package's ``ui/static`` folder, by path relative to it."""
    root = resources.files("llama_swap_trio.ui").joinpath("static")
    found: dict[str, StaticFile] = {}
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                pending.append((name + "/", entry))
                continue
            content_type = CONTENT_TYPES.get(_extension(name))
            if content_type is None:
                continue
            body = entry.read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
            found[name] = StaticFile(body, content_type, etag)
    return found


def _extension(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return last[last.rfind(".") :] if "." in last else ""


def _redirect_target(scope: Scope, path: str) -> str | None:
    """Where ``/`` and ``/ui`` redirect (with the query), or None for a file path."""
    if path == "/":
        return UI_PREFIX
    if path == "/ui":
        query: bytes = scope.get("query_string", b"")
        return UI_PREFIX + ("?" + query.decode("latin-1") if query else "")
    return None


def _lookup(path: str) -> StaticFile | None:
    name = path[len(UI_PREFIX) :] or INDEX
    files = static_files()
    found = files.get(name)
    if found is None and _extension(name) == "" and ".." not in name:
        found = files.get(INDEX)  # a client-side route such as /ui/models
    return found


async def serve_ui(scope: Scope, send: Send) -> None:
    """Answer a request for ``/``, ``/ui`` or a ``/ui/`` path (see :func:`is_ui_path`)."""
    path: str = scope["path"]
    method: str = scope["method"]
    if method not in ("GET", "HEAD"):
        error = errors.ProxyError(
            405,
            "invalid_request_error",
            "method_not_allowed",
            f"method {method} is not allowed on {path}",
            (("allow", "GET, HEAD"),),
        )
        await send_error(scope, send, error)
        return
    target = _redirect_target(scope, path)
    if target is not None:
        status = 302 if path == "/" else 301
        await send_bytes(send, status, b"", None, [(b"location", target.encode("latin-1"))])
        return
    found = _lookup(path)
    if found is None:
        await send_error(scope, send, errors.not_found(path))
        return
    headers = [(b"etag", found.etag), *_COMMON_HEADERS]
    if found.content_type.startswith(b"text/html"):
        headers.extend(_HTML_HEADERS)
    if _matches(header(scope, b"if-none-match"), found.etag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send_bytes(send, 200, found.body, found.content_type, headers)


def _matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """RFC 9110 ``If-None-Match``: ``*`` or a list of tags (weak comparison)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == b"*":
        return True
    tags = (tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b","))
    return etag in tags
