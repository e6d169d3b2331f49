"""The app's one typed contract with the edge (ARCHITECTURE rule 9): :class:`Edge`.

The app speaks ASGI for what ASGI says well: the scope, the request body from ``receive()``,
and every response head and answer of its own as messages through ``send()``, which the app
wraps (the CORS headers, the access log's status), so a head never bypasses those wrappers.
What ASGI cannot say well, the app asks of the request's :class:`Edge`:

- :attr:`Edge.watch`: the request's :class:`~.disconnect.ClientWatch`, which says when the
  client left and cancels the work registered with it (the wait for a model, the upstream
  request);
- :meth:`Edge.relay`: pass the rest of an upstream body on to the client, whichever way the
  connection is served, and say how that ended (``DONE``, ``CLIENT_GONE``, ``UPSTREAM_FAILED``).

So the app never touches a client socket, and a streamed body has one path in the app
(http/forward.py). Implementations:

- the front door's exchange (edge/server.py ``_Exchange``): the watch is fired by the
  connection's reader task, a body is moved by the relay hub (edge/relay_hub.py) straight from
  socket to socket; it is found in ``scope["extensions"][EDGE_EXTENSION]``;
- :class:`~.asgi_edge.AsgiEdge` for every connection hypercorn serves: a watcher task on
  ``receive()``, and the body as ``http.response.body`` messages;
- a fake without sockets in the tests (tests/http/fake_edge.py), found in the scope as the
  front door's is.

:func:`open_edge` is the one place the app obtains its edge from a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio

from llama_swap_trio.edge.asgi_edge import AsgiEdge
from llama_swap_trio.edge.disconnect import ClientWatch
from llama_swap_trio.edge.relay_hub import CLIENT_GONE, DONE, UPSTREAM_FAILED
from llama_swap_trio.edge.upstream_client import UpstreamResponse
from llama_swap_trio.http.asgi import Receive, Scope, Send

__all__ = ["CLIENT_GONE", "DONE", "EDGE_EXTENSION", "UPSTREAM_FAILED", "Edge", "open_edge"]

#: scope["extensions"] key of a server's own Edge for the request (the front door's, a fake's)
EDGE_EXTENSION = "llama_swap_trio.edge"


class Edge(Protocol):
    """What the app needs from the transport for one HTTP request, beyond ASGI."""

    @property
    def watch(self) -> ClientWatch:
        """The request's disconnect watch (fired by the edge when the client leaves)."""
        ...

    async def relay(self, response: UpstreamResponse, on_data: Callable[[bytes], None]) -> str:
        """Pass the rest of ``response``'s body on to the client; return how it ended.

        The response head must already have been sent (through ``send``), and the response not
        finished. ``on_data`` is called with every piece of body relayed, after it was written
        (accounting: request_progress, usage, the time to the first byte); it must not raise.
        The relay stops by itself when the client leaves (``CLIENT_GONE``, the watch fired) and
        when the upstream breaks its body off (``UPSTREAM_FAILED``: the client's response is
        left unfinished, so the client sees it truncated); ``DONE`` when the whole body was
        passed on. The caller closes ``response`` afterwards.
        """
        ...


def open_edge(scope: Scope, receive: Receive, send: Send) -> AbstractAsyncContextManager[Edge]:
    """The request's :class:`Edge` for the duration of the block: the server's own when the
    scope holds one, else an :class:`~.asgi_edge.AsgiEdge` whose watch a watcher task on
    ``receive`` fires.

    Do not read ``receive()`` inside the block. An exception from the block comes out as itself,
    not wrapped in an exception group. (The server's own edge comes in a small class, not a
    generator-based context manager: that is the path of every request the front door serves.)
    """
    given: Edge | None = scope.get("extensions", {}).get(EDGE_EXTENSION)
    if given is not None:
        return _Given(given)
    return _asgi_edge(receive, send)


class _Given:
    __slots__ = ("_edge",)

    def __init__(self, edge: Edge) -> None:
        self._edge = edge

    async def __aenter__(self) -> Edge:
        return self._edge

    async def __aexit__(self, *exc_info: object) -> None:
        return None


@asynccontextmanager
async def _asgi_edge(receive: Receive, send: Send) -> AsyncIterator[Edge]:
    watch = ClientWatch()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run, receive)
            try:
                yield AsgiEdge(send, watch)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watcher itself never fails, so a group holds the block's own exception.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
