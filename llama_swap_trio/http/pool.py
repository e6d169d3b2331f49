"""Connection pools to upstreams: one lean HTTP client per upstream *process instance*.

A pool is keyed by ``(model id, generation)``. The generation increments on every successful
start, so a restarted upstream never gets a socket that was opened to its predecessor: a stale
keep-alive connection to a dead process is the classic source of "Server disconnected without
sending a response" (encode/httpx#2983, research python-stack 2.3). When a newer generation of a
model shows up, the clients of older generations are closed.

Each client is an :class:`~llama_swap_trio.edge.upstream_client.UpstreamClient` (h11 over trio
streams; httpx's general client cost about 3.5 ms of CPU per forwarded request, see that module):

- its connections are closed the moment its process starts to stop (:meth:`ClientPool.retire`),
  *before* the stop signal is sent: llama-server (cpp-httplib) waits for an open keep-alive
  connection to go idle-timeout before it exits on SIGTERM, which cost ~100 ms per stop (107 ms
  with one idle connection against 7 ms without, measured on llama.cpp b-0.3.36); afterwards
  the pool refuses new connections to that instance;
- it sends only the headers the forwarder gives it, plus ``host``: no ``user-agent``,
  ``accept-encoding`` or other defaults, and no ``HTTP_PROXY``/``NO_PROXY`` from the environment
  can redirect local upstream traffic;
- ``connect`` timeout from the model's ``timeouts.connect``; no read timeout (an LLM stream may
  pause for minutes between tokens, e.g. while a long prompt is processed). The wait for the
  response head (``timeouts.response_header``) is enforced by the forwarder;
- no cap on connections (the upstream's own parallel slots are the real limit and the router's
  ``concurrency_limit`` bounds admission); idle keep-alive connections expire after 4 s, under
  llama-server's (cpp-httplib) 5 s keep-alive timeout, so we rarely reuse a socket the upstream is
  about to close.
"""

from __future__ import annotations

import logging

import trio

from llama_swap_trio import errors
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.edge.upstream_client import UpstreamClient
from llama_swap_trio.routing.api import Grant

log = logging.getLogger(__name__)


def new_client(model: ModelConfig) -> UpstreamClient:
    """A client configured for forwarding to ``model`` (see the module docstring)."""
    return UpstreamClient(model.proxy, connect_timeout=model.timeouts.connect or None)


class ClientPool:
    """One :class:`UpstreamClient` per upstream process instance.

    Only ever used from the trio thread; its methods that mutate the dict never await between a
    lookup and the update, so no lock is needed.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], UpstreamClient] = {}
        #: model id -> the newest generation that is stopping or gone (no new connections to it)
        self._retired: dict[str, int] = {}
        self._closed = False

    def keys(self) -> list[tuple[str, int]]:
        """The ``(model id, generation)`` of every open client (for tests and diagnostics)."""
        return sorted(self._clients)

    async def client_for(self, grant: Grant) -> UpstreamClient:
        """The client of the upstream instance ``grant`` refers to; created on first use.

        Clients of older generations of the same model are closed: that process is gone.

        Raises:
            ProxyError: 502, the instance is stopping (:meth:`retire`): no new connection to it.
        """
        if self._closed:
            raise RuntimeError("ClientPool is closed")
        model_id = grant.model.id
        key = (model_id, grant.upstream.generation)
        if key[1] <= self._retired.get(model_id, -1):
            raise errors.upstream_error(model_id, f"[{model_id}] the upstream is stopping")
        client = self._clients.get(key)
        if client is not None:
            return client
        client = self._clients[key] = new_client(grant.model)
        stale = [k for k in self._clients if k[0] == model_id and k[1] < key[1]]
        await self._close_keys(stale)
        return client

    def retire(self, model_id: str, generation: int) -> None:
        """The instances of ``model_id`` up to ``generation`` stop: close their clients now.

        Synchronous, so it runs inside the ``stopping`` notice, before the stop signal is sent:
        an idle keep-alive connection would hold llama-server's exit back. A response still being
        relayed keeps its connection until it ends (it is never returned to a closed client).
        """
        self._retired[model_id] = max(generation, self._retired.get(model_id, -1))
        keys = [k for k in self._clients if k[0] == model_id and k[1] <= generation]
        for key in keys:
            self._clients.pop(key).close()
        if keys:
            log.debug("closed %d upstream client(s) of stopping %s: %s", len(keys), model_id, keys)

    async def aclose(self) -> None:
        """Close every client; the pool refuses new lookups afterwards."""
        self._closed = True
        await self._close_keys(list(self._clients))

    async def _close_keys(self, keys: list[tuple[str, int]]) -> None:
        clients = [self._clients.pop(k) for k in keys]
        # Closing only closes sockets (synchronously): it cannot block or be cancelled halfway.
        for client in clients:
            client.close()
        if clients:
            log.debug("closed %d upstream client(s): %s", len(clients), keys)
        await trio.lowlevel.checkpoint()
