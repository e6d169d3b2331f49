"""Requests for a peer's model (SPEC 6.6): the same forwarding as a local model, no router.

A peer is never started, swapped or counted by the scheduler, so a peer that is down can never
block a local model. Its request takes the same path as a local one through the app's
``_forward`` (disconnect watch, streaming relay, timeouts, usage, the feed's ``request`` event);
only the grant comes from :func:`serve_peer` instead of the router. To the forwarder a peer model
is a :class:`ModelConfig` whose ``proxy`` is the peer's URL and whose ``use_model_name`` is the
peer's own name for the model (so ``<peer>/<model>`` reaches the peer as ``<model>``), with the
peer's filters and timeouts.

Credentials: the client's ``Authorization`` and ``x-api-key`` never reach a peer (it is another
party); the peer's ``api_key``, when set, is sent as both ``Authorization: Bearer KEY`` and
``x-api-key: KEY``, as llama-swap does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.config.parity_model import PeerConfig, PeerModel
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.asgi import Scope
from llama_swap_trio.routing.api import Grant
from llama_swap_trio.upstream.api import UpstreamState

_CREDENTIALS = (b"authorization", b"x-api-key")


class PeerEndpoint:
    """Stands in for an upstream in a :class:`Grant`: always ready, one generation, nothing to
    start or stop (the forwarder only reads ``generation`` to pick its connection pool)."""

    def __init__(self, model: ModelConfig) -> None:
        self._model = model

    @property
    def model(self) -> ModelConfig:
        return self._model

    @property
    def state(self) -> UpstreamState:
        return UpstreamState.READY

    @property
    def generation(self) -> int:
        return 0

    async def start(self) -> None:
        """Nothing to start: the peer runs by itself."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def evict(self) -> None:
        """Never evicted: the router does not know peers."""

    def set_in_flight(self, count: int) -> None:
        """No TTL to pause."""

    def rearm_idle(self) -> None:
        """No idle timer."""


def peer_model_config(peer: PeerConfig, model: PeerModel) -> ModelConfig:
    """The forwarder's view of ``model`` on ``peer`` (see the module docstring)."""
    return ModelConfig(
        id=model.qualified,
        argv=(),
        cmd="",
        cmd_stop="",
        proxy=peer.proxy,
        port=None,
        check_endpoint="none",
        ttl=0,
        unload_timeout=0,
        aliases=(),
        env={},
        use_model_name=model.name,
        filters=peer.filters,
        timeouts=peer.timeouts,
    )


class Peers:
    """The peer models of one configuration, each with its forwarding view (built once)."""

    def __init__(self, peers: dict[str, PeerConfig] | None = None) -> None:
        self._peers = dict(peers or {})
        self._views: dict[str, tuple[ModelConfig, PeerEndpoint]] = {}

    def view(self, model: PeerModel) -> tuple[ModelConfig, PeerEndpoint]:
        found = self._views.get(model.qualified)
        if found is None:
            config = peer_model_config(self._peers[model.peer], model)
            found = self._views[model.qualified] = (config, PeerEndpoint(config))
        return found

    def scope_for(self, scope: Scope, model: PeerModel) -> Scope:
        """``scope`` with the client's credentials replaced by the peer's key (if it has one)."""
        key = self._peers[model.peer].api_key
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _CREDENTIALS]
        if key:
            token = key.encode("latin-1")
            headers += [(b"authorization", b"Bearer " + token), (b"x-api-key", token)]
        return {**scope, "headers": headers}

    @asynccontextmanager
    async def serve(self, model: PeerModel) -> AsyncIterator[Grant]:
        """A grant for ``model`` at once; a forwarding error is relabelled to name the peer.

        Raises:
            ProxyError: from the forwarding, its message saying which peer failed.
        """
        config, endpoint = self.view(model)
        try:
            yield Grant(config, endpoint)
        except ProxyError as error:
            # "model 'p/m': cannot connect ..." -> "peer 'p' (model 'p/m'): cannot connect ..."
            _, _, detail = error.message.partition(": ")
            raise ProxyError(
                error.status,
                error.type,
                error.code,
                f"peer '{model.peer}' (model '{model.qualified}'): {detail or error.message}",
                error.headers,
            ) from error
