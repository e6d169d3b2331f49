"""Configs for routing tests, built directly (no TOML, no loader)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from llama_swap_trio.config.model import (
    DEFAULT_GROUP,
    Config,
    GroupConfig,
    MatrixConfig,
    MatrixSet,
    ModelConfig,
    RoutingConfig,
)


def model(
    model_id: str,
    *,
    group: str = DEFAULT_GROUP,
    priority: int = 0,
    concurrency_limit: int = 0,
    ttl: int = 0,
) -> ModelConfig:
    return ModelConfig(
        id=model_id,
        argv=("true",),
        cmd="true",
        cmd_stop="",
        proxy="http://127.0.0.1:9",
        port=None,
        check_endpoint="none",
        ttl=ttl,
        unload_timeout=10,
        aliases=(),
        env={},
        concurrency_limit=concurrency_limit,
        group=group,
        priority=priority,
    )


def group(
    name: str,
    *members: str,
    swap: bool = True,
    exclusive: bool = True,
    persistent: bool = False,
) -> GroupConfig:
    return GroupConfig(name, tuple(members), swap=swap, exclusive=exclusive, persistent=persistent)


def group_config(
    *groups: GroupConfig,
    loose: Iterable[str] = (),
    priority: Mapping[str, int] | None = None,
    limits: Mapping[str, int] | None = None,
    settings: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    """Models are the groups' members plus ``loose`` ones, which form the implicit group.
    ``settings``: model id -> ``ModelConfig`` fields to set (``{"a": {"protected": True}}``)."""
    priority = priority or {}
    limits = limits or {}
    members = {m: g.name for g in groups for m in g.members}
    loose = tuple(loose)
    for m in loose:
        members[m] = DEFAULT_GROUP
    all_groups = {g.name: g for g in groups}
    if loose:
        all_groups[DEFAULT_GROUP] = GroupConfig(DEFAULT_GROUP, loose)
    models = {
        m: model(m, group=g, priority=priority.get(m, 0), concurrency_limit=limits.get(m, 0))
        for m, g in members.items()
    }
    for m, fields in (settings or {}).items():
        models[m] = attrs.evolve(models[m], **fields)
    return Config(
        path="test.toml", models=models, aliases={}, routing=RoutingConfig("group", all_groups)
    )


def single_group(
    *ids: str,
    priority: Mapping[str, int] | None = None,
    limits: Mapping[str, int] | None = None,
    settings: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    """The classic setup: no [routing], one model at a time."""
    return group_config(loose=ids, priority=priority, limits=limits, settings=settings)


def matrix_config(
    models: Iterable[str],
    sets: Iterable[tuple[str, Iterable[str]]],
    costs: Mapping[str, int] | None = None,
    priority: Mapping[str, int] | None = None,
) -> Config:
    ids = tuple(models)
    priority = priority or {}
    expanded = tuple(
        MatrixSet(name, " & ".join(sorted(members)), frozenset(members)) for name, members in sets
    )
    evict_costs = {m: (costs or {}).get(m, 1) for m in ids}
    routing = RoutingConfig("matrix", {}, MatrixConfig(expanded, evict_costs))
    return Config(
        path="test.toml",
        models={m: model(m, priority=priority.get(m, 0)) for m in ids},
        aliases={},
        routing=routing,
    )
