"""A fake edge: the app's transport contract (edge/contract.py ``Edge``) without any socket.

It plays the server for one request: the ASGI ``receive`` (the request body, then
``http.disconnect`` once the response is over or the client left) and ``send`` (recorded), and
it is the request's ``Edge`` (found in ``scope["extensions"]`` as the front door's is): its watch
is fired by :meth:`FakeEdge.leave`, and :meth:`FakeEdge.relay` records every relayed piece. Tests
script the client: leave after N pieces, or hold the relay after the first piece.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from llama_swap_trio.edge.contract import CLIENT_GONE, DONE, EDGE_EXTENSION, UPSTREAM_FAILED
from llama_swap_trio.edge.disconnect import ClientWatch
from llama_swap_trio.edge.upstream_client import BrokenResponse, UpstreamResponse
from llama_swap_trio.http.asgi import Message, Scope


class FakeEdge:
    """One request's server and edge.

    Args:
        leave_after: the client leaves once this many pieces were relayed (None: it stays).
        hold_after_first: after the first relayed piece, the relay waits for :attr:`go_on`
            (a test can look at the request meanwhile); :attr:`first_piece` is set then.
    """

    def __init__(self, *, leave_after: int | None = None, hold_after_first: bool = False) -> None:
        self.watch = ClientWatch()
        #: messages the app sent through ``send`` (heads, its own answers, error events)
        self.sent: list[Message] = []
        #: body pieces the app had the edge relay, in order
        self.relayed: list[bytes] = []
        #: how each relay ended
        self.outcomes: list[str] = []
        self.first_piece = trio.Event()
        self.go_on = trio.Event()
        self._leave_after = leave_after
        self._hold = hold_after_first
        self._body: bytes | None = None
        self._over = trio.Event()

    # -- the ASGI server side --------------------------------------------------------------------

    def scope(self, method: str, path: str, body: bytes = b"", **extra: Any) -> Scope:
        """An HTTP scope for ``method path`` (query after ``?``) whose edge is this fake."""
        self._body = body
        raw, _, query = path.partition("?")
        headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        return {
            "type": "http",
            "http_version": "1.1",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": method,
            "scheme": "http",
            "path": raw,
            "raw_path": raw.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "extensions": {EDGE_EXTENSION: self},
            **extra,
        }

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._over.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._over.set()

    def leave(self) -> None:
        """The client goes away."""
        self.watch.client_left()
        self._over.set()

    # -- what the test looks at ------------------------------------------------------------------

    @property
    def head(self) -> Message | None:
        """The ``http.response.start`` the app sent, if any."""
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) <= 1, starts
        return starts[0] if starts else None

    def header(self, name: bytes) -> bytes | None:
        head = self.head
        assert head is not None
        return next((v for k, v in head["headers"] if k.lower() == name), None)

    @property
    def body_messages(self) -> list[Message]:
        return [m for m in self.sent if m["type"] == "http.response.body"]

    @property
    def relayed_body(self) -> bytes:
        return b"".join(self.relayed)

    # -- the Edge ---------------------------------------------------------------------------------

    async def relay(self, response: UpstreamResponse, on_data: Callable[[bytes], None]) -> str:
        """Record the rest of ``response``'s body piece by piece (``Edge.relay``)."""
        assert self.head is not None, "a relay needs the head sent first"
        outcome = await self._relay(response, on_data)
        self.outcomes.append(outcome)
        if outcome == DONE:
            self._over.set()
        return outcome

    async def _relay(self, response: UpstreamResponse, on_data: Callable[[bytes], None]) -> str:
        with self.watch.cancel_on_disconnect() as guard:
            try:
                while (chunk := await response.next_chunk()) is not None:
                    self.relayed.append(chunk)
                    on_data(chunk)
                    if len(self.relayed) == 1:
                        self.first_piece.set()
                        if self._hold:
                            await self.go_on.wait()
                    if self._leave_after is not None and len(self.relayed) >= self._leave_after:
                        self.leave()
                        await trio.lowlevel.checkpoint()  # the watch's cancel lands here
            except BrokenResponse:
                return UPSTREAM_FAILED
        return CLIENT_GONE if guard.cancelled_caught else DONE
