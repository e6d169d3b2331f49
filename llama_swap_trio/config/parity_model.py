"""The resolved shape of ``[peers]``, ``[profiles]`` and ``[selectors]`` (SPEC 6.6).

Produced by :mod:`.parity_validate`; read by the HTTP layer (:mod:`llama_swap_trio.http.names`)
to turn the name a request asked for into a local model, a peer's model or a selector's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from llama_swap_trio.config.model import Filters, JSONValue, Timeouts

Strategy = Literal["warm", "pin", "spillover"]
STRATEGIES: tuple[Strategy, ...] = ("warm", "pin", "spillover")

#: a peer's response head timeout when the config does not set one (llama-swap's peer default)
PEER_RESPONSE_HEADER_TIMEOUT = 60.0


@attrs.frozen
class PeerConfig:
    id: str
    #: base URL, no trailing ``/``; the request path is appended (``https://openrouter.ai/api``)
    proxy: str
    #: replaces the client's ``Authorization`` and ``x-api-key``; "" = send neither
    api_key: str
    #: the peer's own model names, in config order, duplicates dropped
    models: tuple[str, ...]
    filters: Filters = attrs.field(factory=Filters)
    timeouts: Timeouts = attrs.field(
        factory=lambda: Timeouts(response_header=PEER_RESPONSE_HEADER_TIMEOUT)
    )


@attrs.frozen
class PeerModel:
    """One model of one peer."""

    peer: str
    #: the peer's own name for it (what the peer receives as ``model``)
    name: str

    @property
    def qualified(self) -> str:
        """``<peer>/<model>``: always addressable, and the id listed in ``/v1/models``."""
        return f"{self.peer}/{self.name}"


@attrs.frozen
class ProfileConfig:
    name: str
    description: str
    #: requested name -> target name; "" makes the requested name answer 404
    pins: Mapping[str, str]


@attrs.frozen
class SelectorConfig:
    id: str
    strategy: Strategy
    #: model ids, aliases or peer model names, as written (validated to resolve)
    targets: tuple[str, ...]
    #: ``spillover``: requests per active target before the next one is used
    spillover: int = 1
    name: str = ""
    description: str = ""
    unlisted: bool = False
    metadata: Mapping[str, JSONValue] = attrs.field(factory=dict)


@attrs.frozen
class Parity:
    """Everything of SPEC 6.6 a resolved config carries (empty when none is configured)."""

    peers: Mapping[str, PeerConfig] = attrs.field(factory=dict)
    #: every name a request may use for a peer's model: each ``<peer>/<model>``, and the bare
    #: ``<model>`` when exactly one peer has it and no local id or alias takes it
    peer_models: Mapping[str, PeerModel] = attrs.field(factory=dict)
    profiles: Mapping[str, ProfileConfig] = attrs.field(factory=dict)
    selectors: Mapping[str, SelectorConfig] = attrs.field(factory=dict)
