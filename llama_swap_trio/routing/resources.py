"""``GET /api/resources`` and the feed snapshot's ``resources`` (SPEC 6.7): the GPU budget in use.

A pure function of the config and a router snapshot (its states and the measured figures), so the
body is tested without a server and is always what the memory rule itself counts
(:func:`~llama_swap_trio.routing.memory.model_size`): a running, starting or stopping model its
size, a sleeping one its ``sleep_memory``.
"""

from __future__ import annotations

from typing import Any

from llama_swap_trio.config.model import Config
from llama_swap_trio.routing.api import RouterSnapshot
from llama_swap_trio.routing.memory import model_size
from llama_swap_trio.upstream.api import UpstreamState

_DOWN = frozenset({UpstreamState.STOPPED, UpstreamState.SHUTDOWN})


def memory_configured(config: Config) -> bool:
    """Whether the config has a budget or any model a ``memory``."""
    return config.gpu_memory is not None or any(
        m.memory is not None for m in config.models.values()
    )


def sizes(config: Config, snapshot: RouterSnapshot) -> dict[str, list[int]]:
    """``model -> [bytes running, bytes asleep]`` for each model with a ``memory``, so a client
    that follows the states (``watch``) can keep ``used`` current."""
    found: dict[str, list[int]] = {}
    for model_id, model in config.models.items():
        if model.memory is not None:
            size = model_size(model, config.gpu_memory, snapshot.measured.get(model_id))
            found[model_id] = [size, min(model.sleep_memory, size)]
    return found


def resources_body(config: Config, snapshot: RouterSnapshot) -> dict[str, Any]:
    """``{"gpu_memory", "used", "free", "models": [{model, state, declared, measured}]}`` in
    bytes; ``models``: every model that is not stopped; ``gpu_memory`` and ``free`` are null
    without a budget."""
    budget = config.gpu_memory
    used = 0
    models: list[dict[str, Any]] = []
    for status in snapshot.models:
        model = config.models.get(status.id)
        if model is None or status.state in _DOWN:
            continue
        measured = snapshot.measured.get(status.id)
        size = model_size(model, budget, measured)
        used += min(model.sleep_memory, size) if status.state == UpstreamState.SLEEPING else size
        models.append(
            {
                "model": status.id,
                "state": str(status.state),
                "declared": model.memory if isinstance(model.memory, int) else None,
                "measured": measured,
            }
        )
    free = None if budget is None else max(budget - used, 0)
    return {"gpu_memory": budget, "used": used, "free": free, "models": models}
