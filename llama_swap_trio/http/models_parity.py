"""``/v1/models`` records for peer models, selectors and the active profile's pins (SPEC 6.6).

As llama-swap lists them:

- each peer model as ``<peer>/<model>`` (never the bare name), ``owned_by`` the peer id, named
  ``"<peer>: <model>"``, always ``unloaded`` (a peer is never loaded by us), ``meta.peer``;
- each selector that is not ``unlisted``, with its ``name``, ``description`` and ``metadata``,
  ``meta.selector`` = ``{strategy, targets[, spillover]}``, ``loaded`` while a local target is
  ready or starting (``pin``: its first target only);
- each pin of the active profile whose target is not ``""`` and whose name is not already a
  model, alias, peer model or selector, ``meta.profile`` and ``meta.pin_of``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_swap_trio.config.model import Config
from llama_swap_trio.errors import SOURCE as OWNER
from llama_swap_trio.http.rewrite import to_json

if TYPE_CHECKING:
    from llama_swap_trio.http.names import Names

_UNLOADED = {"value": "unloaded", "state": "stopped"}


def parity_records(config: Config, names: Names, created: int) -> list[dict[str, Any]]:
    """The records above (unsorted: the caller sorts the whole list)."""
    parity = config.parity
    out: list[dict[str, Any]] = []
    for peer in parity.peers.values():
        for model in peer.models:
            out.append(
                {
                    "id": f"{peer.id}/{model}",
                    "object": "model",
                    "created": created,
                    "owned_by": peer.id,
                    "name": f"{peer.id}: {model}",
                    "meta": {"peer": peer.id, "peer_model": model},
                    "status": dict(_UNLOADED),
                }
            )
    for selector in parity.selectors.values():
        if selector.unlisted:
            continue
        record: dict[str, Any] = {
            "id": selector.id,
            "object": "model",
            "created": created,
            "owned_by": OWNER,
        }
        if selector.name.strip():
            record["name"] = selector.name.strip()
        if selector.description.strip():
            record["description"] = selector.description.strip()
        about: dict[str, Any] = {"strategy": selector.strategy, "targets": list(selector.targets)}
        if selector.strategy == "spillover":
            about["spillover"] = selector.spillover
        meta: dict[str, Any] = {str(k): to_json(v) for k, v in selector.metadata.items()}
        meta["selector"] = about
        record["meta"] = meta
        loaded = names.selector_status(selector) == "loaded"
        record["status"] = {"value": "loaded", "state": "ready"} if loaded else dict(_UNLOADED)
        out.append(record)
    for pin, target in names.active_pins().items():
        if not target or pin in parity.selectors or pin in parity.peer_models:
            continue
        if config.resolve(pin) is not None:
            continue
        out.append(
            {
                "id": pin,
                "object": "model",
                "created": created,
                "owned_by": OWNER,
                "meta": {"profile": names.active_profile, "pin_of": target},
                "status": dict(_UNLOADED),
            }
        )
    return out
