"""From the name a request asked for to what serves it: profile pin, selector, model or peer.

The order is llama-swap's (research 1.4): the active profile's pin for the exact name (``""``:
404), then a selector (its choice), then a local model id, an alias, a peer model's qualified
``<peer>/<model>``, and last a bare peer model name that exactly one peer has. Pins do not chain
and selector targets are never selectors (the config refuses both).

The runtime state of SPEC 6.6 lives here, one :class:`Names` per configuration generation: the
active profile (none at startup, and none after a reload, which builds a new generation) and the
spillover counts of requests each selector routed that are still running.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config, ModelConfig
from llama_swap_trio.config.parity_model import PeerModel, SelectorConfig
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.routing.selectors import TargetView, choose


@attrs.frozen
class Choice:
    """What a request resolved to: exactly one of ``model`` and ``peer`` is set."""

    #: the name the client sent
    requested: str
    #: the name after the profile pin and the selector (what filters and the body see)
    name: str
    model: ModelConfig | None = None
    peer: PeerModel | None = None
    #: the selector that chose, if any
    selector: str | None = None


def selector_unavailable(selector_id: str) -> ProxyError:
    return ProxyError(
        503,
        "server_error",
        "model_unavailable",
        f"selector '{selector_id}' has no available target (every local one is stopping)",
        (("retry-after", "1"),),
    )


class Names:
    """Resolves requested names for one configuration; holds the active profile.

    Args:
        config: the configuration.
        state_of: a local model's current state as a string (``"ready"``...).
    """

    def __init__(self, config: Config, state_of: Callable[[str], str]) -> None:
        self.config = config
        self._state_of = state_of
        self.active_profile: str | None = None
        #: (selector id, target key) -> requests it routed there that are still running
        self._in_flight: dict[tuple[str, str], int] = {}
        self._turn = itertools.count()

    # -- profiles ----------------------------------------------------------------------------

    def profiles_body(self) -> dict[str, Any]:
        """The ``GET /api/profiles`` body (SPEC 6.1), profiles sorted by name."""
        profiles = self.config.parity.profiles
        return {
            "active": self.active_profile,
            "profiles": [
                {"name": p.name, "description": p.description, "pins": dict(p.pins)}
                for p in sorted(profiles.values(), key=lambda p: p.name)
            ],
        }

    def activate(self, name: str | None) -> None:
        """Make ``name`` the active profile (None: none).

        Raises:
            ProxyError: 404 when there is no such profile.
        """
        if name is not None and name not in self.config.parity.profiles:
            raise ProxyError(
                404, "invalid_request_error", "not_found", f"profile '{name}' not found"
            )
        self.active_profile = name

    def active_pins(self) -> dict[str, str]:
        if self.active_profile is None:
            return {}
        return dict(self.config.parity.profiles[self.active_profile].pins)

    # -- resolution --------------------------------------------------------------------------

    def target(self, name: str) -> tuple[ModelConfig | None, PeerModel | None]:
        """A local model (id or alias) or a peer model named ``name``; (None, None) if neither."""
        model = self.config.resolve(name)
        if model is not None:
            return model, None
        return None, self.config.parity.peer_models.get(name)

    @contextmanager
    def choose(self, requested: str) -> Iterator[Choice]:
        """Resolve ``requested``; the choice is held (spillover counts it) until the block ends.

        Raises:
            ProxyError: 404 ``model_not_found`` (unknown, or pinned to ``""`` by the active
                profile); 503 when a selector has no target left.
        """
        name = requested
        pins = self.active_pins()
        if requested in pins:
            name = pins[requested]
            if not name:
                raise errors.model_not_found(requested)
        selector = self.config.parity.selectors.get(name)
        key: tuple[str, str] | None = None
        if selector is not None:
            name, target_key = self._pick(selector)
            key = (selector.id, target_key)
        model, peer = self.target(name)
        if model is None and peer is None:
            raise errors.model_not_found(requested)
        if key is not None:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield Choice(requested, name, model, peer, selector.id if selector else None)
        finally:
            if key is not None:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]

    def _key(self, name: str) -> tuple[str, str | None]:
        """A target's key (model id or qualified peer name) and its local state (None: peer)."""
        model, peer = self.target(name)
        if model is not None:
            return model.id, self._state_of(model.id)
        assert peer is not None  # the config checked every target resolves
        return peer.qualified, None

    def _pick(self, selector: SelectorConfig) -> tuple[str, str]:
        """The target name the selector picks now, and its key."""
        views: list[TargetView] = []
        names: dict[str, str] = {}
        for target in selector.targets:
            key, state = self._key(target)
            names.setdefault(key, target)
            views.append(TargetView(key, state, self._in_flight.get((selector.id, key), 0)))
        picked = choose(selector, views, next(self._turn))
        if picked is None:
            raise selector_unavailable(selector.id)
        return names[picked.key], picked.key

    def selector_status(self, selector: SelectorConfig) -> str:
        """``loaded`` when a local target is ready or starting (``pin``: the first only)."""
        targets = selector.targets[:1] if selector.strategy == "pin" else selector.targets
        for target in targets:
            _, state = self._key(target)
            if state in ("ready", "starting"):
                return "loaded"
        return "unloaded"
