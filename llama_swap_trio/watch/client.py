"""The ``watch`` connection loop: follow the daemon's websocket feed, reconnecting as needed.

``follow`` owns the connection and nothing else: it folds every message into a ``WatchState`` and
calls ``changed()`` so the view redraws. Its outcomes:

- connect refused or timed out: "cannot connect", retry with capped exponential backoff;
- connected, then the daemon goes away (restart, shutdown close 1001, reset): "disconnected,
  reconnecting", retry; the next ``snapshot`` replaces the models and the queue;
- the handshake is rejected with 401/403: the key is missing or wrong, and retrying cannot fix
  that, so ``follow`` returns exit status 2;
- any other HTTP answer to the handshake (e.g. 404 from something that is not the daemon): say so,
  retry with backoff.

``run`` is the command's entry point: it draws the state with ``rich.live.Live`` (redrawn on
messages, at most every ``_MIN_REDRAW`` s, and every ``_TICK`` s so TTL and "ago" count down) and
ends cleanly on Ctrl-C / SIGTERM with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio
from rich.console import Console
from rich.live import Live
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    wrap_client_stream,
)

from llama_swap_trio.watch.render import render
from llama_swap_trio.watch.state import Connection, Link, WatchState

DEFAULT_URL = "http://127.0.0.1:8080"
#: where the API key is read from when none is given on the command line
API_KEY_ENV = "LLAMA_SWAP_TRIO_API_KEY"
FEED_PATH = "/api/events"
MIN_BACKOFF = 0.5
MAX_BACKOFF = 5.0
CONNECT_TIMEOUT = 5.0
#: bounded close: a daemon that vanished must not hold up a reconnect or Ctrl-C
DISCONNECT_TIMEOUT = 1.0

_TICK = 0.25
_MIN_REDRAW = 0.05

_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def feed_url(url: str) -> str:
    """The websocket URL of the feed for a daemon address.

    ``http``/``https`` become ``ws``/``wss``; a bare ``host:port`` is taken as ``http``; a URL with
    no path (or just ``/``) gets ``/api/events``. A URL with a path is used as given.

    Raises:
        ValueError: for a scheme that is not http, https, ws or wss, or a URL without a host.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (use http or https)")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    path = parts.path if parts.path not in ("", "/") else FEED_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def auth_headers(api_key: str | None) -> list[tuple[bytes, bytes]]:
    """The handshake headers that carry the API key (SPEC 3.6), if there is one."""
    if not api_key:
        return []
    return [(b"authorization", b"Bearer " + api_key.encode())]


def _decode(raw: str | bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return None


def _why(exc: BaseException) -> str:
    """A short reason for a failed connect, for the notice ("Connection refused", "timed out")."""
    if isinstance(exc, ConnectionTimeout):
        return "timed out"
    # trio's connect wraps the per-address OSErrors (in a group) under a summary OSError, and
    # trio-websocket wraps that in a HandshakeError: find the first one that names a reason.
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if isinstance(current, OSError) and current.errno:
            return os.strerror(current.errno)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None and linked not in pending:
                pending.append(linked)
    return str(exc) or type(exc).__name__


_Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


async def _open_stream(ws_url: str) -> tuple[_Stream, str, str]:
    """Connect TCP (and TLS for wss) to the feed's host: the stream, the Host header, the path."""
    parts = urlsplit(ws_url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    stream: _Stream
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return stream, parts.netloc.rpartition("@")[2], resource


async def _session(
    ws_url: str,
    headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
    disconnect_timeout: float,
    on_open: Callable[[], None],
    on_message: Callable[[str | bytes], None],
) -> None:
    """One connection to the feed: connect, handshake, deliver messages until it ends.

    We open and own the TCP stream (rather than ``open_websocket_url``) because trio-websocket
    0.12 leaks the socket when a handshake is rejected or the peer vanishes (its ``aclose``
    returns early once a close reason is recorded); ``async with stream`` closes it on every path.

    Raises (inside an ExceptionGroup when they come from the connection's tasks):
        ConnectionTimeout, OSError: could not connect.
        ConnectionRejected: the handshake got an HTTP answer (401, 404...).
        ConnectionClosed: the connection ended.
    """
    try:
        with trio.fail_after(connect_timeout):
            stream, host, resource = await _open_stream(ws_url)
    except trio.TooSlowError:
        raise ConnectionTimeout from None
    async with stream, trio.open_nursery() as nursery:
        try:
            with trio.fail_after(connect_timeout):
                ws = await wrap_client_stream(
                    nursery, stream, host, resource, extra_headers=headers
                )
        except trio.TooSlowError:
            raise ConnectionTimeout from None
        on_open()
        try:
            while True:
                on_message(await ws.get_message())
        finally:
            # a clean close when we are the ones leaving (Ctrl-C), bounded; then the reader goes
            with trio.move_on_after(disconnect_timeout, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def follow(
    url: str,
    api_key: str | None,
    state: WatchState,
    changed: Callable[[], None] = lambda: None,
    *,
    min_backoff: float = MIN_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    connect_timeout: float = CONNECT_TIMEOUT,
    disconnect_timeout: float = DISCONNECT_TIMEOUT,
) -> int:
    """Follow the feed into ``state`` until the daemon rejects the key (returns 2).

    Runs until cancelled otherwise. ``changed`` is called after every change to ``state``.

    Raises:
        ValueError: ``url`` is not a usable daemon address (see ``feed_url``).
    """
    ws_url = feed_url(url)
    headers = auth_headers(api_key)
    has_key = bool(api_key)
    delay = min_backoff

    def notice(
        link: Link, *, retry_in: float | None = None, status: int | None = None, detail: str = ""
    ) -> None:
        state.set_connection(
            Connection(
                link, ws_url, retry_in=retry_in, status=status, has_key=has_key, detail=detail
            )
        )
        changed()

    def on_open() -> None:
        notice(Link.CONNECTED)

    def on_message(message: str | bytes) -> None:
        # A session that delivers messages is healthy: the next failure starts the backoff
        # afresh. (A server that accepts and then closes at once is not, and backs off.)
        nonlocal delay
        delay = min_backoff
        state.apply(_decode(message))
        changed()

    notice(Link.CONNECTING)
    while True:
        rejected: ConnectionRejected | None = None
        closed: ConnectionClosed | None = None
        failed: BaseException | None = None
        # except*: the connection's errors may come grouped from its nursery; anything else
        # (Cancelled above all) propagates untouched.
        try:
            await _session(
                ws_url, headers, connect_timeout, disconnect_timeout, on_open, on_message
            )
        except* ConnectionRejected as group:
            rejected = _first(group, ConnectionRejected)
        except* ConnectionClosed as group:
            closed = _first(group, ConnectionClosed)
        except* (HandshakeError, OSError, trio.BrokenResourceError) as group:
            failed = group.exceptions[0]
        if rejected is not None and rejected.status_code in (401, 403):
            notice(Link.REJECTED, status=rejected.status_code)
            return 2
        if rejected is not None:
            notice(Link.HTTP_ERROR, status=rejected.status_code, retry_in=delay)
        elif closed is not None:
            reason = closed.reason
            detail = (reason.reason or reason.name or "") if reason is not None else ""
            notice(Link.DISCONNECTED, retry_in=delay, detail=detail)
        else:
            was_up = state.connection.link is Link.CONNECTED
            notice(
                Link.DISCONNECTED if was_up else Link.UNREACHABLE,
                retry_in=delay,
                detail=_why(failed) if failed is not None else "",
            )
        await trio.sleep(delay)
        delay = min(delay * 2, max_backoff)
        notice(Link.CONNECTING)


_E = TypeVar("_E", bound=BaseException)


def _first(group: BaseExceptionGroup[_E], kind: type[_E]) -> _E:
    """The first leaf of ``kind`` in ``group`` (except* gives a group even for one exception)."""
    for exc in group.exceptions:
        leaf = _first(exc, kind) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(leaf, kind):
            return leaf
    raise AssertionError("except* matched an empty group")  # pragma: no cover


class _Redrawer:
    """Coalesces change notifications into redraws: at most one per ``_MIN_REDRAW`` s."""

    def __init__(self, live: Live, state: WatchState) -> None:
        self._live = live
        self._state = state
        self._wake = trio.Event()

    def changed(self) -> None:
        self._wake.set()

    def draw(self) -> None:
        size = self._live.console.size
        # fit the terminal (a file or pipe has no height to keep to)
        height = size.height if self._live.console.is_terminal else None
        view = render(self._state, height=height, width=size.width)
        self._live.update(view, refresh=True)

    async def run(self) -> None:
        while True:
            with trio.move_on_after(_TICK):
                await self._wake.wait()
            self._wake = trio.Event()
            self.draw()
            await trio.sleep(_MIN_REDRAW)


async def _stop_on_signal(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            cancel_scope.cancel()
            return


async def _main(url: str, api_key: str | None, console: Console) -> int:
    state = WatchState()
    status = 0
    with Live(
        render(state),
        console=console,
        auto_refresh=False,  # we redraw from the trio thread: the state is not thread-safe
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        redrawer = _Redrawer(live, state)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            nursery.start_soon(redrawer.run)
            status = await follow(url, api_key, state, redrawer.changed)
            nursery.cancel_scope.cancel()
        redrawer.draw()
    if not console.is_terminal:
        console.line()  # Live ends a file or pipe without one
    if status and not console.is_terminal:
        # the final frame went to a file or pipe; say why we stopped where scripts look
        print(f"llama-swap-trio watch: {state.connection.text}", file=sys.stderr)
    return status


def run(url: str = DEFAULT_URL, api_key: str | None = None) -> int:
    """Run the live view until Ctrl-C (exit status 0) or a rejected API key (2).

    Without ``api_key`` the key comes from ``$LLAMA_SWAP_TRIO_API_KEY`` (a key on the command
    line shows in ``ps``). A bad URL is reported on stderr with status 2. Blocking: runs its own
    ``trio.run``.
    """
    if not api_key:
        api_key = os.environ.get(API_KEY_ENV) or None
    try:
        feed_url(url)
    except ValueError as exc:
        print(f"llama-swap-trio watch: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(_main, url, api_key, Console())
    except KeyboardInterrupt:
        # Ctrl-C before the signal receiver was installed (or after it was removed)
        return 0
