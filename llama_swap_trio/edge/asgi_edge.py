"""The edge of a connection hypercorn serves: websockets aside, HTTP/2 and h2c, TLS, chunked
uploads, ``Expect``, HTTP/1.0 (edge/handoff.py), and any other ASGI server.

Such a server gives the app nothing but ASGI, so :class:`AsgiEdge` builds the
:class:`~.contract.Edge` from it: the client is watched by a watcher task on ``receive()``
(:meth:`~.disconnect.ClientWatch.run`, started by :func:`~.contract.open_edge`), and an upstream
body is relayed chunk by chunk as ``http.response.body`` messages, which the server writes at
once (:func:`relay_chunks`). The front door uses :func:`relay_chunks` too, for the bodies its
relay hub cannot move (one that arrived whole with its head, or one from a TLS upstream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from llama_swap_trio.edge.disconnect import ClientWatch
from llama_swap_trio.edge.relay_hub import CLIENT_GONE, DONE, UPSTREAM_FAILED
from llama_swap_trio.edge.upstream_client import BrokenResponse, UpstreamResponse
from llama_swap_trio.http.asgi import Send

log = logging.getLogger(__name__)


async def relay_chunks(
    response: UpstreamResponse, send: Send, watch: ClientWatch, on_data: Callable[[bytes], None]
) -> str:
    """Pass the rest of ``response``'s body on as ``http.response.body`` messages as it arrives;
    ``on_data`` accounts for each piece after it was sent (accounting never delays a token).

    Returns how it ended: ``DONE`` (the last message was sent), ``CLIENT_GONE`` (``watch`` said
    the client left) or ``UPSTREAM_FAILED`` (the upstream broke its response off: the client's
    response is left unfinished, so the server closes the connection when the app returns and
    the client sees a truncated body rather than a complete-looking one).
    """
    final = b""
    if response.arrived_whole:
        # The whole body came with the head (a small answer usually does): nothing to wait for,
        # so nothing a client's leaving must cut, and no cancel scope to pay for.
        final = await response.next_chunk() or b""
    else:
        # One disconnect guard for the whole loop (a cancel scope per chunk cost more than the
        # rest of the loop). The last message goes out after it: the server reports
        # http.disconnect as the normal end of every exchange, which must not cut its own write.
        with watch.cancel_on_disconnect() as guard:
            try:
                while (chunk := await response.next_chunk()) is not None:
                    if response.ended:
                        final = chunk  # the end came with this chunk: one write less
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    on_data(chunk)
            except BrokenResponse as exc:
                log.warning("upstream broke off its response: %s", exc)
                return UPSTREAM_FAILED
        if guard.cancelled_caught:
            return CLIENT_GONE
    await send({"type": "http.response.body", "body": final, "more_body": False})
    if final:
        on_data(final)
    return DONE


class AsgiEdge:
    """The :class:`~.contract.Edge` of a request served by plain ASGI (hypercorn).

    Args:
        send: the request's ``send`` (the app's, wrapped as it wraps it).
        watch: the request's watch, fired by a watcher task on ``receive()`` that the creator
            runs (:func:`~.contract.open_edge`).
    """

    __slots__ = ("_send", "watch")

    def __init__(self, send: Send, watch: ClientWatch) -> None:
        self._send = send
        self.watch = watch

    async def relay(self, response: UpstreamResponse, on_data: Callable[[bytes], None]) -> str:
        """Relay the rest of ``response``'s body chunk by chunk (:func:`relay_chunks`)."""
        return await relay_chunks(response, self._send, self.watch, on_data)
