"""Noticing that the client went away.

An ASGI server's ``send()`` does not raise after the client disconnected; the disconnect shows
only as an ``http.disconnect`` message from ``receive()`` (research python-stack 1.3). So whoever
relays a response watches for it, and the watch cancels the work that serves the gone client: the
wait for a model, the upstream request.

The app obtains a request's watch from its edge (edge/contract.py ``Edge.watch``): our front
door (edge/server.py) reads every connection all along anyway, so it fires the watch itself, with
no watcher task per request; on a connection hypercorn serves, ``open_edge`` runs
:meth:`ClientWatch.run` on ``receive()`` instead.

The watcher does not cancel the caller's whole task: work registers the parts that should stop
with :meth:`ClientWatch.cancel_on_disconnect`, so it can still compute a result (and the router
still gets its serve-done report) after the cancellation.
"""

from __future__ import annotations

from types import TracebackType

import trio

from llama_swap_trio.http.asgi import Receive

_DISCONNECT = frozenset({"http.disconnect", "websocket.disconnect"})


async def until_disconnect(receive: Receive) -> None:
    """Read ``receive()`` until it says the client left (``http.disconnect`` or
    ``websocket.disconnect``); other messages are ignored."""
    while (await receive())["type"] not in _DISCONNECT:
        pass


async def cancel_when_client_leaves(receive: Receive, scope: trio.CancelScope) -> None:
    """A watcher task for a response that runs until the client leaves (a feed, a log
    stream): cancels ``scope`` when ``receive()`` says the client left."""
    await until_disconnect(receive)
    scope.cancel()


class ClientWatch:
    """Whether the client disconnected, and the cancel scopes to cancel when it does."""

    def __init__(self) -> None:
        self.disconnected = False
        self._scopes: list[trio.CancelScope] = []

    def cancel_on_disconnect(self) -> _Guard:
        """A cancel scope that is cancelled when (or if already) the client disconnected.

        Use as ``with watch.cancel_on_disconnect() as scope:``; check ``scope.cancelled_caught``
        afterwards to know whether the block was cut short. (A small class rather than a
        generator-based context manager: the relay enters one per forwarded chunk.)
        """
        return _Guard(self)

    def release(self, scope: trio.CancelScope) -> None:
        """Stop cancelling ``scope`` on disconnect (its guarded phase is over). Idempotent."""
        if scope in self._scopes:
            self._scopes.remove(scope)

    async def run(self, receive: Receive) -> None:
        """Read ``receive()`` until the client disconnects, then cancel the registered scopes.

        Other messages (request body parts the app did not read) are ignored.
        """
        await until_disconnect(receive)
        self.client_left()

    def client_left(self) -> None:
        """The client went away: cancel the registered scopes (and any registered later)."""
        self.disconnected = True
        for scope in self._scopes:
            scope.cancel()


class _Guard:
    """The context manager of :meth:`ClientWatch.cancel_on_disconnect`."""

    __slots__ = ("_scope", "_watch")

    def __init__(self, watch: ClientWatch) -> None:
        self._watch = watch
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        scope = self._scope
        if self._watch.disconnected:
            scope.cancel()
        self._watch._scopes.append(scope)
        return scope.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._watch.release(self._scope)
        return self._scope.__exit__(kind, exc, tb)
