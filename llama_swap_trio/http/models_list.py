"""``GET /v1/models`` and ``GET /running`` bodies (SPEC 3.2), built from the config and a snapshot.

Pure functions of ``(config, router snapshot, now)`` so the field rules are tested without a
server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_swap_trio.config.model import Config, ModelConfig
from llama_swap_trio.http.models_parity import parity_records
from llama_swap_trio.http.rewrite import to_json
from llama_swap_trio.routing.api import RouterSnapshot
from llama_swap_trio.upstream.api import UpstreamState

if TYPE_CHECKING:
    from llama_swap_trio.http.names import Names

OWNER = "llama-swap-trio"

#: states in which a model counts as ``unloaded`` in the list
_UNLOADED = frozenset({UpstreamState.STOPPED, UpstreamState.SHUTDOWN, UpstreamState.BACKOFF})


def _states(snapshot: RouterSnapshot) -> dict[str, UpstreamState]:
    return {status.id: status.state for status in snapshot.models}


def _record(
    model: ModelConfig, record_id: str, state: UpstreamState, created: int, alias_of: str | None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": record_id,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
    }
    if model.name.strip():
        record["name"] = model.name.strip()
    if model.description.strip():
        record["description"] = model.description.strip()
    meta: dict[str, Any] = {str(k): to_json(v) for k, v in model.metadata.items()}
    aliases = model.all_aliases
    if aliases:
        meta["aliases"] = list(aliases)
    if alias_of is not None:
        meta["alias_of"] = alias_of
    if meta:
        record["meta"] = meta
    record["status"] = {
        "value": "unloaded" if state in _UNLOADED else "loaded",
        "state": str(state),
    }
    return record


def models_list(
    config: Config, snapshot: RouterSnapshot, created: int, names: Names | None = None
) -> dict[str, Any]:
    """The ``/v1/models`` body: listed models (and their aliases when configured), sorted by id.

    Args:
        created: unix seconds of this request, the same in every record (as llama-swap).
        names: the generation's names: with it, peer models, selectors and the active profile's
            pins are listed too (:func:`.models_parity.parity_records`).
    """
    states = _states(snapshot)
    data: list[dict[str, Any]] = []
    for model in config.models.values():
        if model.unlisted:
            continue
        state = states.get(model.id, UpstreamState.STOPPED)
        data.append(_record(model, model.id, state, created, None))
        if config.include_aliases_in_list:
            for alias in model.all_aliases:
                data.append(_record(model, alias, state, created, model.id))
    if names is not None:
        data.extend(parity_records(config, names, created))
    data.sort(key=lambda record: str(record["id"]))
    return {"object": "list", "data": data}


def running_list(config: Config, snapshot: RouterSnapshot) -> dict[str, Any]:
    """The ``/running`` body: every model that is not stopped, sorted by id."""
    running: list[dict[str, Any]] = []
    for model_id, state in sorted(_states(snapshot).items()):
        model = config.models.get(model_id)
        if model is None or state == UpstreamState.STOPPED:
            continue
        running.append(
            {
                "model": model.id,
                "state": str(state),
                "cmd": model.cmd,
                "proxy": model.proxy,
                "ttl": model.ttl,
                "name": model.name,
                "description": model.description,
            }
        )
    return {"running": running}
