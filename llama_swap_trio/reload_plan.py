"""What a reload does to each model (SPEC 6.4): kept, restarted, added or removed.

A model is *kept* when its launch definition did not change: the resolved ``cmd``, ``cmd_stop``,
``proxy``, ``check_endpoint``, ``env`` and ``unload_timeout``. A kept model keeps its process and
its ``${PORT}``; new and changed models are numbered as at startup, skipping the ports kept models
hold.

The resolved strings contain the port, so "did it change" is asked with the model's old port
pinned: the file is loaded once with every old model's port pinned to find the kept ones, then
once more with only the kept ones pinned, which gives the configuration that runs (and, the
ports of kept models being the same in both, the same launch definitions for them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from llama_swap_trio.config.model import Config, ModelConfig

#: loads the file with some models' ``${PORT}`` pinned (``load_config`` bound to the path)
Loader = Callable[[Mapping[str, int]], Config]


def launch_definition(model: ModelConfig) -> tuple[object, ...]:
    """What a running process depends on; equal definitions keep the process across a reload."""
    return (
        model.argv,
        model.cmd_stop,
        model.proxy,
        model.check_endpoint,
        tuple(sorted(model.env.items())),
        model.unload_timeout,
    )


@attrs.frozen
class ReloadPlan:
    """The outcome of a reload for each model id (each list sorted)."""

    kept: tuple[str, ...]
    restarted: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def as_event(self) -> dict[str, object]:
        """The ``reload`` feed event and ``POST /api/config/reload`` answer of a valid file."""
        return {
            "type": "reload",
            "ok": True,
            "kept": list(self.kept),
            "restarted": list(self.restarted),
            "added": list(self.added),
            "removed": list(self.removed),
        }


def classify(old: Config, new: Config) -> ReloadPlan:
    """Compare two configurations model by model (ports as they are in each)."""
    common = old.models.keys() & new.models.keys()
    kept = sorted(
        m for m in common if launch_definition(old.models[m]) == launch_definition(new.models[m])
    )
    return ReloadPlan(
        kept=tuple(kept),
        restarted=tuple(sorted(common - set(kept))),
        added=tuple(sorted(new.models.keys() - old.models.keys())),
        removed=tuple(sorted(old.models.keys() - new.models.keys())),
    )


def plan_reload(old: Config, load: Loader) -> tuple[Config, ReloadPlan]:
    """The configuration to run and what happens to each model (see the module docstring).

    Raises:
        ConfigError: the file is invalid (from ``load``).
    """
    old_ports = {m: model.port for m, model in old.models.items() if model.port is not None}
    probe = classify(old, load(old_ports))
    pinned = {m: old_ports[m] for m in probe.kept if m in old_ports}
    config = load(pinned)
    # Kept models have the same port in both loads, hence the same definitions; classify again
    # all the same, so a file edited between the two loads can never keep a changed model.
    return config, classify(old, config)
