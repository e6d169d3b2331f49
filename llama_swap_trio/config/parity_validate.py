"""Typing and validation of ``[peers]``, ``[profiles]`` and ``[selectors]`` (SPEC 6.6).

Two steps, hooked into the loader's: :func:`type_parity` structures each table on its own against
:mod:`.parity_schema`; :func:`build_parity` checks values and cross references once the models,
aliases and routing are known, and resolves them into :class:`~.parity_model.Parity`. Every
problem is reported with its key path and the checks carry on, as everywhere in the loader.

Names, as llama-swap has them:

- every peer model is addressable as ``<peer>/<model>`` (its *qualified* name); no local id or
  alias may equal one, and two peers may not produce the same one (``a`` + ``b/c`` vs ``a/b`` +
  ``c``);
- the bare ``<model>`` also works when exactly one peer lists it and no local id or alias takes it;
- a selector id may be none of those; its targets are local or peer names, never selectors;
- a profile pin maps a requested name to a local, peer or selector name (``""`` = 404); pins do
  not chain.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from llama_swap_trio.config import model as m
from llama_swap_trio.config.parity_model import (
    STRATEGIES,
    Parity,
    PeerConfig,
    PeerModel,
    ProfileConfig,
    SelectorConfig,
    Strategy,
)
from llama_swap_trio.config.parity_schema import RawPeer, RawProfile, RawSelector
from llama_swap_trio.config.problems import KeyPath, Problems
from llama_swap_trio.config.schema import structure

#: peer ids: like model ids, but without ``/`` (it separates the peer from the model)
PEER_ID = re.compile(r"^[A-Za-z0-9.:_-]+$")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


@attrs.frozen
class TypedParity:
    """The typed tables (None where typing failed; the name still counts as defined)."""

    peers: dict[str, RawPeer | None] = attrs.field(factory=dict)
    profiles: dict[str, RawProfile | None] = attrs.field(factory=dict)
    selectors: dict[str, RawSelector | None] = attrs.field(factory=dict)


def type_parity(doc: Mapping[str, Any], problems: Problems) -> TypedParity:
    """Structure each ``peers.*``, ``profiles.*`` and ``selectors.*`` table on its own."""

    def each(key: str, cl: type[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        tables = doc.get(key)
        if not isinstance(tables, dict):
            return out  # absent, or reported by the top level's typing
        for name, table in tables.items():
            out[name], found = structure(table, cl)
            for key_path, message in found:
                problems.add((key, name, *key_path), message)
        return out

    return TypedParity(
        peers=each("peers", RawPeer),
        profiles=each("profiles", RawProfile),
        selectors=each("selectors", RawSelector),
    )


class _Names:
    """What a name in a profile or selector can refer to, for the checks below."""

    def __init__(self, ids: set[str], alias_owner: Mapping[str, str]) -> None:
        self.ids = ids
        self.alias_owner = alias_owner
        self.peer_models: dict[str, PeerModel] = {}
        self.selectors: set[str] = set()

    def local(self, name: str) -> str | None:
        """The model id ``name`` names (an id or an alias), or None."""
        if name in self.ids:
            return name
        return self.alias_owner.get(name)

    def taken_by(self, name: str) -> str | None:
        """What already uses ``name`` as a model name, in words; None when it is free."""
        if name in self.ids:
            return "a model id"
        if name in self.alias_owner:
            return f"an alias of model '{self.alias_owner[name]}'"
        return None


def _url(problems: Problems, where: KeyPath, value: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        problems.add(where, f"not a valid URL: {exc}")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add(where, f"must be an http:// or https:// URL, got {value!r}")
        return None
    if parts.query or parts.fragment:
        problems.add(where, "must be a base URL without a query or fragment")
        return None
    return value.rstrip("/")


def _peers(typed: TypedParity, names: _Names, problems: Problems) -> dict[str, PeerConfig]:
    add = problems.add
    peers: dict[str, PeerConfig] = {}
    qualified_at: dict[str, KeyPath] = {}
    bare: dict[str, list[PeerModel]] = {}
    for peer_id, raw in typed.peers.items():
        path: KeyPath = ("peers", peer_id)
        if not PEER_ID.match(peer_id):
            add(path, "peer ids may only contain letters, digits and . : - _ (no '/')")
        if raw is None:
            continue
        proxy = _url(problems, (*path, "proxy"), raw.proxy)
        if raw.api_key and (_SPACE_OR_CONTROL.search(raw.api_key) or not raw.api_key.isascii()):
            add((*path, "api_key"), "must be ASCII, without spaces or control characters")
        why = "the proxy sets the peer's model name itself"
        if "model" in raw.filters.strip_params:
            add((*path, "filters", "strip_params"), f"must not contain 'model': {why}")
        if "model" in raw.filters.set_params:
            add((*path, "filters", "set_params", "model"), f"must not be set: {why}")
        for key in ("connect", "response_header"):
            value = getattr(raw.timeouts, key)
            if not value >= 0:
                add((*path, "timeouts", key), f"must be >= 0, got {value}")
        if not raw.models:
            add((*path, "models"), "must list at least one model")
        models: list[str] = []
        for i, name in enumerate(raw.models):
            where = (*path, "models", i)
            if not name.strip() or name != name.strip():
                add(where, "model names must be non-empty, without leading or trailing spaces")
                continue
            if name in models:
                continue  # a duplicate is harmless (llama-swap ignores it too)
            models.append(name)
            peer_model = PeerModel(peer_id, name)
            fqn = peer_model.qualified
            taken = names.taken_by(fqn)
            if taken is not None:
                add(where, f"'{fqn}' (this peer's name for it) is also {taken}")
            elif fqn in qualified_at:
                other = ".".join(str(p) for p in qualified_at[fqn])
                add(where, f"'{fqn}' is ambiguous: {other} gives the same name")
            else:
                qualified_at[fqn] = where
                names.peer_models[fqn] = peer_model
                bare.setdefault(name, []).append(peer_model)
        if proxy is not None:
            peers[peer_id] = PeerConfig(
                id=peer_id,
                proxy=proxy,
                api_key=raw.api_key,
                models=tuple(models),
                filters=m.Filters(
                    strip_params=tuple(raw.filters.strip_params),
                    set_params=dict(raw.filters.set_params),
                ),
                timeouts=m.Timeouts(raw.timeouts.connect, raw.timeouts.response_header),
            )
    for name, owners in bare.items():
        if len(owners) == 1 and names.taken_by(name) is None and name not in names.peer_models:
            names.peer_models[name] = owners[0]
    return peers


def _resolve_target(names: _Names, name: str) -> tuple[str | None, str | None]:
    """``(kind, message)``: kind ``local``/``peer`` when ``name`` resolves, else the problem."""
    if names.local(name) is not None:
        return "local", None
    if name in names.peer_models:
        return "peer", None
    if name in names.selectors:
        return None, f"'{name}' is a selector; selector chaining is not supported"
    return None, f"unknown model '{name}'"


def _coexist(routing: m.RoutingConfig, model_ids: list[str]) -> str | None:
    """Why ``model_ids`` cannot all run at once under ``routing``, or None when they can."""
    if routing.router == "matrix" and routing.matrix is not None:
        wanted = set(model_ids)
        if any(wanted <= s.models for s in routing.matrix.sets):
            return None
        return "spillover targets must all appear together in one expanded matrix set"
    groups = {
        group.name for group in routing.groups.values() for mid in model_ids if mid in group.members
    }
    if len(groups) != 1:
        return "spillover targets must share one routing group (with swap = false)"
    group = routing.groups[groups.pop()]
    if group.name == m.DEFAULT_GROUP:
        return "spillover targets must be in one [routing.groups] group with swap = false"
    if group.swap:
        return f"spillover targets share group '{group.name}', which needs swap = false"
    return None


def _selectors(
    typed: TypedParity, names: _Names, routing: m.RoutingConfig | None, problems: Problems
) -> dict[str, SelectorConfig]:
    add = problems.add
    selectors: dict[str, SelectorConfig] = {}
    for selector_id, raw in typed.selectors.items():
        path: KeyPath = ("selectors", selector_id)
        taken = names.taken_by(selector_id)
        if taken is None and selector_id in names.peer_models:
            taken = f"the name of peer model '{names.peer_models[selector_id].qualified}'"
        if not selector_id:
            add(path, "selector ids must not be empty")
        elif taken is not None:
            add(path, f"the selector id '{selector_id}' is also {taken}")
        if raw is None:
            continue
        ok = True
        if raw.strategy not in STRATEGIES:
            choices = ", ".join(f"'{s}'" for s in STRATEGIES)
            add((*path, "strategy"), f"must be one of {choices}, got '{raw.strategy}'")
            ok = False
        if raw.spillover < 1:
            add((*path, "spillover"), f"must be >= 1, got {raw.spillover}")
        if not raw.targets:
            add((*path, "targets"), "must list at least one target")
            ok = False
        local: list[str] = []
        resolved: dict[str, int] = {}
        for i, target in enumerate(raw.targets):
            where = (*path, "targets", i)
            kind, message = _resolve_target(names, target)
            if kind is None:
                add(where, message or f"unknown model '{target}'")
                ok = False
                continue
            if kind == "peer" and raw.strategy == "warm":
                add(where, f"'{target}' is a peer model; the warm strategy needs local models")
                ok = False
            key = names.local(target) if kind == "local" else names.peer_models[target].qualified
            assert key is not None
            if key in resolved and raw.strategy == "spillover":
                add(where, f"'{target}' is the same model as targets[{resolved[key]}]")
                ok = False
            resolved.setdefault(key, i)
            if kind == "local" and key not in local:
                local.append(key)
        if ok and raw.strategy == "spillover" and len(local) > 1 and routing is not None:
            why = _coexist(routing, local)
            if why is not None:
                add((*path, "targets"), why)
                ok = False
        if ok:
            strategy: Strategy = raw.strategy  # type: ignore[assignment]  # checked above
            selectors[selector_id] = SelectorConfig(
                id=selector_id,
                strategy=strategy,
                targets=raw.targets,
                spillover=raw.spillover,
                name=raw.name,
                description=raw.description,
                unlisted=raw.unlisted,
                metadata=dict(raw.metadata),
            )
    return selectors


def _profiles(typed: TypedParity, names: _Names, problems: Problems) -> dict[str, ProfileConfig]:
    add = problems.add
    profiles: dict[str, ProfileConfig] = {}
    for name, raw in typed.profiles.items():
        path: KeyPath = ("profiles", name)
        if not name:
            add(path, "profile names must not be empty")
        if raw is None:
            continue
        if not raw.pins:
            add((*path, "pins"), "must contain at least one pin")
        for pin, target in raw.pins.items():
            where = (*path, "pins", pin)
            if not pin:
                add(where, "pin names must not be empty")
            elif pin in names.peer_models and names.peer_models[pin].qualified == pin:
                add(where, f"'{pin}' is a peer model's qualified name and cannot be pinned")
            if target and target not in names.selectors:
                kind, message = _resolve_target(names, target)
                if kind is None:
                    add(where, message or f"unknown model '{target}'")
        profiles[name] = ProfileConfig(name, raw.description, dict(raw.pins))
    return profiles


def build_parity(
    typed: TypedParity,
    ids: set[str],
    alias_owner: Mapping[str, str],
    routing: m.RoutingConfig | None,
    problems: Problems,
) -> Parity:
    """Validate the typed tables against the models and routing; the resolved :class:`Parity`."""
    names = _Names(ids, alias_owner)
    peers = _peers(typed, names, problems)
    names.selectors = set(typed.selectors)
    selectors = _selectors(typed, names, routing, problems)
    profiles = _profiles(typed, names, problems)
    return Parity(
        peers=peers,
        peer_models=dict(names.peer_models),
        profiles=profiles,
        selectors=selectors,
    )
