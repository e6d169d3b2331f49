"""A tiny stand-in for the daemon's ``/api/events`` websocket, for the watch client tests.

It runs ``trio_websocket.serve_websocket`` on 127.0.0.1 and, on every connection, sends the
``messages`` it is given (the snapshot first, as the daemon does), then keeps the connection open
so the test can ``send`` more. ``stop`` vanishes abruptly (as a killed daemon); ``close`` closes
every connection with a code (as a daemon shutting down: 1001); ``start(port)`` comes back on the
same port. With ``reject_status`` set it refuses every handshake with that HTTP status.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)


class FakeFeed:
    def __init__(self, nursery: trio.Nursery, messages: list[dict[str, Any]] | None = None) -> None:
        self._nursery = nursery
        self.messages: list[dict[str, Any]] = list(messages or [])
        self.reject_status: int | None = None
        self.port = 0
        #: handshakes seen, accepted or not
        self.handshakes = 0
        #: the headers of the last handshake, names lower-cased
        self.headers: dict[str, str] = {}
        self.path = ""
        self._live: set[WebSocketConnection] = set()
        self._scope: trio.CancelScope | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        """Listen (on ``port``, or a free one the first time); returns once listening."""
        scope = trio.CancelScope()
        server: WebSocketServer = await self._nursery.start(self._serve, scope, port)
        self._scope = scope
        self.port = server.port

    async def _serve(
        self, scope: trio.CancelScope, port: int, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        with scope:
            await serve_websocket(self._handle, "127.0.0.1", port, None, task_status=task_status)

    def stop(self) -> None:
        """Vanish: listener and connections go, with no close handshake."""
        assert self._scope is not None
        self._scope.cancel()
        self._live.clear()

    async def close(self, code: int = 1001, reason: str = "shutting down") -> None:
        """Close every open connection cleanly with ``code``; keep listening."""
        for ws in list(self._live):
            await ws.aclose(code, reason)

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message to every open connection."""
        for ws in list(self._live):
            await ws.send_message(json.dumps(message))

    async def ping(self) -> None:
        """Ping every open connection and wait for the pongs: all sent before has been read."""
        for ws in list(self._live):
            await ws.ping()

    @property
    def connected(self) -> int:
        return len(self._live)

    async def _handle(self, request: WebSocketRequest) -> None:
        self.handshakes += 1
        self.path = request.path
        self.headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if self.reject_status is not None:
            await request.reject(self.reject_status, body=b"unauthorized")
            return
        ws = await request.accept()
        try:
            for message in self.messages:
                await ws.send_message(json.dumps(message))
            self._live.add(ws)
            # the client never speaks; wait until it leaves
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass
        finally:
            self._live.discard(ws)
