"""The raw TOML shape of ``[peers.<id>]``, ``[profiles.<name>]`` and ``[selectors.<id>]``.

Shape only, like :mod:`.schema` (field names are the TOML keys, types what TOML must hold,
defaults what a missing key gets); :mod:`.parity_validate` checks values and references. Each
table is structured on its own (one peer at a time...) so a typo in one does not hide the
problems of another.
"""

from __future__ import annotations

import attrs

from llama_swap_trio.config.parity_model import PEER_RESPONSE_HEADER_TIMEOUT
from llama_swap_trio.config.schema import NameList


@attrs.frozen
class RawPeerFilters:
    strip_params: NameList = attrs.field(factory=lambda: NameList(()))
    set_params: dict[str, object] = attrs.field(factory=dict)


@attrs.frozen
class RawPeerTimeouts:
    connect: float = 30.0
    response_header: float = PEER_RESPONSE_HEADER_TIMEOUT


@attrs.frozen
class RawPeer:
    proxy: str
    models: tuple[str, ...]
    api_key: str = ""
    filters: RawPeerFilters = attrs.field(factory=RawPeerFilters)
    timeouts: RawPeerTimeouts = attrs.field(factory=RawPeerTimeouts)


@attrs.frozen
class RawProfile:
    pins: dict[str, str]
    description: str = ""


@attrs.frozen
class RawSelector:
    strategy: str
    targets: tuple[str, ...]
    spillover: int = 1
    name: str = ""
    description: str = ""
    unlisted: bool = False
    metadata: dict[str, object] = attrs.field(factory=dict)
