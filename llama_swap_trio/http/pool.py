"""Connection pools to upstreams: one httpx client per upstream *process instance*.

A pool is keyed by ``(model id, generation)``. The generation increments on every successful
start, so a restarted upstream never gets a socket that was opened to its predecessor: a stale
keep-alive connection to a dead process is the classic source of "Server disconnected without
sending a response" (encode/httpx#2983, research python-stack 2.3). When a newer generation of a
model shows up, the clients of older generations are closed.

Client settings (research python-stack 2.2):

- ``trust_env=False``: ``HTTP_PROXY``/``NO_PROXY`` must never redirect local upstream traffic.
- no default headers: httpx would add ``accept``, ``accept-encoding``, ``connection`` and
  ``user-agent`` to every request; a transparent proxy forwards only what the client sent.
- timeouts: ``connect`` from the model's ``timeouts.connect``; no read timeout (an LLM stream may
  pause for minutes between tokens, e.g. while a long prompt is processed); no write or pool
  timeout. The wait for the response head (``timeouts.response_header``) is enforced by the
  forwarder around ``client.send``, not here, because httpx's ``read`` timeout applies to every
  socket read of the body too.
- limits: no cap on connections (the upstream's own parallel slots are the real limit and the
  router's ``concurrency_limit`` bounds admission); idle keep-alive connections expire after 4 s,
  under llama-server's (cpp-httplib) 5 s keep-alive timeout, so we rarely reuse a socket the
  upstream is about to close.
"""

from __future__ import annotations

import logging

import httpx
import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.routing.api import Grant

log = logging.getLogger(__name__)

#: idle pooled connections per upstream process
MAX_KEEPALIVE = 32
#: seconds an idle pooled connection is kept; below cpp-httplib's 5 s keep-alive timeout
KEEPALIVE_EXPIRY = 4.0
#: seconds a close of a client may take (it only closes sockets; it never waits on the network)
CLOSE_TIMEOUT = 2.0


def new_client(model: ModelConfig) -> httpx.AsyncClient:
    """A client configured for forwarding to ``model`` (see the module docstring)."""
    connect = model.timeouts.connect or None
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=connect),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
        trust_env=False,
        follow_redirects=False,
    )
    # The headers setter re-adds httpx's defaults, so delete them one by one (verified).
    for name in list(client.headers.keys()):
        del client.headers[name]
    return client


class ClientPool:
    """One :class:`httpx.AsyncClient` per upstream process instance.

    Only ever used from the trio thread; its methods that mutate the dict never await between a
    lookup and the update, so no lock is needed.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], httpx.AsyncClient] = {}
        self._closed = False

    def keys(self) -> list[tuple[str, int]]:
        """The ``(model id, generation)`` of every open client (for tests and diagnostics)."""
        return sorted(self._clients)

    async def client_for(self, grant: Grant) -> httpx.AsyncClient:
        """The client of the upstream instance ``grant`` refers to; created on first use.

        Clients of older generations of the same model are closed: that process is gone.
        """
        if self._closed:
            raise RuntimeError("ClientPool is closed")
        model_id = grant.model.id
        key = (model_id, grant.upstream.generation)
        client = self._clients.get(key)
        if client is not None:
            return client
        client = self._clients[key] = new_client(grant.model)
        stale = [k for k in self._clients if k[0] == model_id and k[1] < key[1]]
        await self._close_keys(stale)
        return client

    async def close_model(self, model_id: str, *, up_to: int | None = None) -> None:
        """Close the clients of ``model_id`` (its process stopped).

        Args:
            up_to: close only generations up to this one (a newer process may already serve).
        """
        await self._close_keys(
            [k for k in self._clients if k[0] == model_id and (up_to is None or k[1] <= up_to)]
        )

    async def aclose(self) -> None:
        """Close every client; the pool refuses new lookups afterwards."""
        self._closed = True
        await self._close_keys(list(self._clients))

    async def _close_keys(self, keys: list[tuple[str, int]]) -> None:
        clients = [self._clients.pop(k) for k in keys]
        if not clients:
            return
        # Shielded and bounded: closing must finish even when the caller is being cancelled,
        # or sockets would leak (and surface as ResourceWarnings).
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            for client in clients:
                await client.aclose()
        log.debug("closed %d upstream client(s): %s", len(clients), keys)
