"""A fix for hypercorn-trio (0.18) holding closed client connections open for keep_alive_timeout.

When a client closes an idle keep-alive connection, hypercorn's ``TCPServer._read_data`` sees EOF
and returns, but the connection's task group still holds the keep-alive idle timer, so the socket
stays in CLOSE-WAIT, one file descriptor each, for ``keep_alive_timeout`` (75 s here). A stream of
short connections then piles up descriptors until the daemon runs out (found by the soak in
tests/reliability: every client connection outlived its client). The fix stops the idle timer
once reading is over and makes later restarts of it no-ops, so the connection closes at once.

Applied once, at daemon start, by :func:`install`; harmless if hypercorn fixes it upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.trio.tcp_server import TCPServer

_MARK = "_llama_swap_trio_eof_patch"


async def _no_idle_timeout() -> None:
    """The idle timer of a connection whose client is gone: nothing to wait for."""


def install() -> None:
    """Patch ``TCPServer._read_data`` (idempotent)."""
    if getattr(TCPServer, _MARK, False):
        return
    original: Callable[[Any], Awaitable[None]] = TCPServer._read_data

    async def _read_data(self: Any) -> None:
        try:
            await original(self)
        finally:
            # Shielded and bounded: the lock is only ever held for a cancel and a nursery start.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                self._idle_timeout = _no_idle_timeout
                await self.idle_task.stop()

    setattr(TCPServer, "_read_data", _read_data)  # noqa: B010 (mypy: a method cannot be assigned)
    setattr(TCPServer, _MARK, True)
