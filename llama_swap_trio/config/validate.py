"""The one validation pass: value ranges, enums and cross references, then the resolved Config.

Runs on the typed raw shape (:mod:`schema`). Every check reports ``(key path, message)`` and
carries on, so a file with ten mistakes gets ten lines. Models that failed typing are skipped
here, but their ids still count as known, so a typo inside one model does not also turn every
reference to it into an "unknown model" line.
"""

from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from collections.abc import Mapping
from typing import get_args

import attrs

from llama_swap_trio.config import health
from llama_swap_trio.config import memory as mem
from llama_swap_trio.config import model as m
from llama_swap_trio.config.browser import check_allowed_hosts, check_cors_origins
from llama_swap_trio.config.cmdline import split_command
from llama_swap_trio.config.matrix_dsl import build_matrix
from llama_swap_trio.config.parity_validate import TypedParity, build_parity
from llama_swap_trio.config.problems import KeyPath, Problems
from llama_swap_trio.config.schema import RawConfig, RawModel, RawRouting
from llama_swap_trio.config.server import check_server

MODEL_ID = re.compile(r"^[A-Za-z0-9/.:_-]+$")
MAX_PORT = 65535
#: ``unload_timeout = 0`` at the top level means this many seconds (SPEC 2.1).
DEFAULT_UNLOAD_TIMEOUT = 10


@attrs.frozen
class Typed:
    """The typed pieces of one document (None where typing failed)."""

    path: str
    top: RawConfig | None
    #: every model id of the file, in order, with its typed table when it typed cleanly
    models: dict[str, RawModel | None]
    routing: RawRouting | None
    ports: Mapping[str, int]
    #: ``[peers]``, ``[profiles]``, ``[selectors]`` (SPEC 6.6)
    parity: TypedParity = attrs.field(factory=TypedParity)


def _enum(problems: Problems, path: KeyPath, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed)
        problems.add(path, f"must be one of {choices}, got '{value}'")


#: C0 controls and DEL, except tab and newline (a multi-line ``cmd``): a NUL cannot be passed to
#: exec at all, and the others are invisible in every log line that quotes the command.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _no_control_characters(problems: Problems, path: KeyPath, value: str) -> None:
    found = _CONTROL.search(value)
    if found is not None:
        problems.add(
            path,
            f"must not contain control characters (found U+{ord(found.group()):04X}); "
            "only tab and newline are allowed",
        )


def _at_least(problems: Problems, path: KeyPath, value: float, low: float) -> None:
    if not value >= low:  # written this way so that nan fails too
        low_text = int(low) if float(low).is_integer() else low
        problems.add(path, f"must be >= {low_text}, got {value}")


class _Checker:
    def __init__(self, typed: Typed, problems: Problems) -> None:
        self.typed = typed
        self.problems = problems
        self.ids = set(typed.models)
        #: alias -> model id, filled by :meth:`aliases`
        self.alias_owner: dict[str, str] = {}
        self.argv: dict[str, tuple[str, ...]] = {}
        self.proxy: dict[str, str] = {}

    def unknown_model(self, name: str) -> str:
        if name in self.alias_owner:
            return f"unknown model '{name}' ('{name}' is an alias of '{self.alias_owner[name]}')"
        return f"unknown model '{name}'"

    def resolve(self, name: str) -> str | None:
        if name in self.ids:
            return name
        return self.alias_owner.get(name)

    # -- top level ---------------------------------------------------------------------------

    def top(self, top: RawConfig) -> None:
        add = self.problems.add
        _at_least(self.problems, ("health_check_timeout",), top.health_check_timeout, 1)
        if not 1 <= top.start_port <= MAX_PORT:
            add(("start_port",), f"must be between 1 and {MAX_PORT}, got {top.start_port}")
        elif self.typed.ports and max(self.typed.ports.values()) > MAX_PORT:
            last = max(self.typed.ports.values())
            add(
                ("start_port",),
                f"{len(self.typed.ports)} models use ${{PORT}} from {top.start_port}, "
                f"which reaches port {last}, beyond {MAX_PORT}",
            )
        _at_least(self.problems, ("global_ttl",), top.global_ttl, 0)
        health.check_interval(self.problems, ("health_interval",), top.health_interval)
        health.check_failures(self.problems, ("health_failures",), top.health_failures)
        _at_least(self.problems, ("unload_timeout",), top.unload_timeout, 0)
        _at_least(self.problems, ("queue_timeout",), top.queue_timeout, 0)
        _enum(self.problems, ("log_level",), top.log_level, get_args(m.LogLevel))
        _enum(self.problems, ("log_to_stdout",), top.log_to_stdout, get_args(m.LogToStdout))
        for i, key in enumerate(top.api_keys):
            if not key:
                add(("api_keys", i), "must not be empty")
            elif any(c.isspace() for c in key):
                add(("api_keys", i), "must not contain spaces")
        _at_least(self.problems, ("activity", "max_entries"), top.activity.max_entries, 1)
        if top.activity.db is not None and not top.activity.db.strip():
            add(("activity", "db"), "must not be empty (leave it out to keep no database)")

    def ignore_paths(self, top: RawConfig) -> tuple[re.Pattern[str], ...]:
        patterns = top.upstream.ignore_paths
        if patterns is None:
            patterns = m.DEFAULT_IGNORE_PATHS
        compiled: list[re.Pattern[str]] = []
        for i, pattern in enumerate(patterns):
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                self.problems.add(
                    ("upstream", "ignore_paths", i),
                    f"invalid regular expression {pattern!r}: {exc}",
                )
        return tuple(compiled)

    def preload(self, top: RawConfig) -> tuple[str, ...]:
        found: list[str] = []
        for i, name in enumerate(top.hooks.on_startup.preload):
            model_id = self.resolve(name)
            if model_id is None:
                where = ("hooks", "on_startup", "preload", i)
                self.problems.add(where, f"unknown model or alias '{name}'")
            elif model_id not in found:
                found.append(model_id)
        return tuple(found)

    # -- models ------------------------------------------------------------------------------

    def model_ids(self) -> None:
        for model_id in self.typed.models:
            if not MODEL_ID.match(model_id):
                self.problems.add(
                    ("models", model_id),
                    "model ids may only contain letters, digits and / . : - _",
                )

    def model(self, model_id: str, raw: RawModel) -> None:
        path: KeyPath = ("models", model_id)
        add = self.problems.add
        _no_control_characters(self.problems, (*path, "cmd"), raw.cmd)
        _no_control_characters(self.problems, (*path, "cmd_stop"), raw.cmd_stop)
        try:
            argv = tuple(split_command(raw.cmd))
        except ValueError as exc:
            add((*path, "cmd"), f"cannot be split into words: {exc}")
        else:
            if argv:
                self.argv[model_id] = argv
            else:
                add((*path, "cmd"), "must not be empty")
        if raw.cmd_stop.strip():
            try:
                split_command(raw.cmd_stop.replace("${PID}", "1"))
            except ValueError as exc:
                add((*path, "cmd_stop"), f"cannot be split into words: {exc}")
        self._proxy(model_id, raw, path)
        if raw.check_endpoint != "none" and not raw.check_endpoint.startswith("/"):
            add((*path, "check_endpoint"), "must be 'none' or a path starting with '/'")
        _at_least(self.problems, (*path, "ttl"), raw.ttl, -1)
        health.check_interval(self.problems, (*path, "health_interval"), raw.health_interval)
        health.check_failures(self.problems, (*path, "health_failures"), raw.health_failures)
        _at_least(self.problems, (*path, "unload_timeout"), raw.unload_timeout, 0)
        _at_least(self.problems, (*path, "concurrency_limit"), raw.concurrency_limit, 0)
        _at_least(self.problems, (*path, "min_residency"), raw.min_residency, 0)
        if raw.queue_timeout is not None:
            _at_least(self.problems, (*path, "queue_timeout"), raw.queue_timeout, 0)
        _at_least(self.problems, (*path, "timeouts", "connect"), raw.timeouts.connect, 0)
        _at_least(
            self.problems, (*path, "timeouts", "response_header"), raw.timeouts.response_header, 0
        )
        for name in raw.env:
            if not name or "=" in name or "\0" in name:
                add((*path, "env", name), "environment variable names must be non-empty, no '='")
        self._filters(raw, path)

    def _proxy(self, model_id: str, raw: RawModel, path: KeyPath) -> None:
        where = (*path, "proxy")
        port = self.typed.ports.get(model_id)
        if raw.proxy is None:
            if port is None:
                self.problems.add(
                    where,
                    "not set, and the default 'http://127.0.0.1:${PORT}' needs ${PORT} in cmd",
                )
            else:
                self.proxy[model_id] = f"http://127.0.0.1:{port}"
            return
        try:
            parts = urllib.parse.urlsplit(raw.proxy)
            _ = parts.port  # raises on a bad port
        except ValueError as exc:
            self.problems.add(where, f"not a valid URL: {exc}")
            return
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problems.add(where, f"must be an http:// or https:// URL, got {raw.proxy!r}")
            return
        self.proxy[model_id] = raw.proxy.rstrip("/")

    def _filters(self, raw: RawModel, path: KeyPath) -> None:
        why = "the proxy routes on the request's model itself (use use_model_name to rewrite it)"
        where = (*path, "filters")
        if "model" in raw.filters.strip_params:
            self.problems.add((*where, "strip_params"), f"must not contain 'model': {why}")
        if "model" in raw.filters.set_params:
            self.problems.add((*where, "set_params", "model"), f"must not be set: {why}")
        for key, params in raw.filters.set_params_by_id.items():
            if "model" in params:
                where_key = (*where, "set_params_by_id", key, "model")
                self.problems.add(where_key, f"must not be set: {why}")

    def aliases(self) -> None:
        """Aliases and ``set_params_by_id`` keys: unique across the file, never a model id."""
        claimed_at: dict[str, str] = {}
        for model_id, raw in self.typed.models.items():
            if raw is None:
                continue
            path: KeyPath = ("models", model_id)
            names: list[tuple[str, KeyPath, bool]] = [
                (a, (*path, "aliases", i), True) for i, a in enumerate(raw.aliases)
            ]
            names += [
                (key, (*path, "filters", "set_params_by_id", key), False)
                for key in raw.filters.set_params_by_id
                if key != model_id
            ]
            mine: set[str] = set()
            for name, where, listed in names:
                if not name:
                    self.problems.add(where, "aliases must not be empty")
                elif name in self.ids:
                    what = "alias" if listed else "key"
                    self.problems.add(where, f"{what} '{name}' is also a model id")
                elif name in claimed_at and claimed_at[name] != model_id:
                    first = claimed_at[name]
                    self.problems.add(
                        where, f"alias '{name}' is claimed by models '{first}' and '{model_id}'"
                    )
                elif name in mine and listed:
                    self.problems.add(where, f"alias '{name}' is listed twice")
                else:
                    mine.add(name)
                    claimed_at[name] = model_id
                    self.alias_owner[name] = model_id

    # -- routing -----------------------------------------------------------------------------

    def routing(
        self, routing: RawRouting
    ) -> tuple[m.RoutingConfig, dict[str, str], dict[str, int]]:
        """The routing config, each grouped model's group, and the resolved priorities."""
        add = self.problems.add
        _enum(self.problems, ("routing", "router"), routing.router, get_args(m.RouterKind))
        _at_least(self.problems, ("routing", "starvation_after"), routing.starvation_after, 0)
        group_of: dict[str, str] = {}
        groups: dict[str, m.GroupConfig] = {}
        for name, group in routing.groups.items():
            path: KeyPath = ("routing", "groups", name)
            if name == m.DEFAULT_GROUP:
                add(path, f"the group name '{m.DEFAULT_GROUP}' is reserved for the implicit group")
            members: list[str] = []
            for i, member in enumerate(group.members):
                where = (*path, "members", i)
                if member not in self.ids:
                    add(where, self.unknown_model(member))
                elif member in members:
                    add(where, f"'{member}' is listed twice in this group")
                elif member in group_of:
                    add(where, f"model '{member}' is already in group '{group_of[member]}'")
                else:
                    members.append(member)
                    group_of[member] = name
            groups[name] = m.GroupConfig(
                name, tuple(members), group.swap, group.exclusive, group.persistent
            )
        ungrouped = tuple(model_id for model_id in self.typed.models if model_id not in group_of)
        if ungrouped:
            groups[m.DEFAULT_GROUP] = m.GroupConfig(m.DEFAULT_GROUP, ungrouped)

        matrix = None
        if routing.matrix is not None:
            matrix = build_matrix(
                routing.matrix, self.typed.models, self.alias_owner, self.problems
            )
        elif routing.router == "matrix":
            add(("routing", "matrix"), "is missing; router = 'matrix' needs it")

        priority: dict[str, int] = {}
        priority_from: dict[str, str] = {}
        for name, value in routing.priority.items():
            model_id = self.resolve(name)
            where = ("routing", "priority", name)
            if model_id is None:
                add(where, f"unknown model or alias '{name}'")
            elif model_id in priority:
                first = priority_from[model_id]
                add(where, f"model '{model_id}' already has a priority (from '{first}')")
            else:
                priority[model_id] = value
                priority_from[model_id] = name
        kind: m.RouterKind = "matrix" if routing.router == "matrix" else "group"
        routing_config = m.RoutingConfig(kind, groups, matrix, routing.starvation_after)
        return routing_config, group_of, priority


def build_config(typed: Typed, problems: Problems) -> m.Config | None:
    """Validate ``typed`` and resolve it into a :class:`model.Config` (None if any problem)."""
    checker = _Checker(typed, problems)
    checker.model_ids()
    for model_id, raw in typed.models.items():
        if raw is not None:
            checker.model(model_id, raw)
    checker.aliases()
    top = typed.top
    budget = mem.check_budget(problems, top.resources.gpu_memory) if top is not None else None
    memory = {
        model_id: mem.check_model(
            problems,
            model_id,
            raw.memory,
            None if raw.sleep is None else (raw.sleep.sleep, raw.sleep.wake),
            raw.sleep_memory,
            budget,
            _nvml_error,
        )
        for model_id, raw in typed.models.items()
        if raw is not None
    }
    preload: tuple[str, ...] = ()
    ignore: tuple[re.Pattern[str], ...] = ()
    server = m.ServerConfig()
    if top is not None:
        checker.top(top)
        preload = checker.preload(top)
        ignore = checker.ignore_paths(top)
        server = attrs.evolve(
            check_server(top.server, typed.path, problems),
            cors_origins=check_cors_origins(problems, top.server.cors_origins),
            allowed_hosts=check_allowed_hosts(problems, top.server.allowed_hosts),
        )
    routing = group_of = priority = None
    if typed.routing is not None:
        routing, group_of, priority = checker.routing(typed.routing)
    parity = build_parity(typed.parity, checker.ids, checker.alias_owner, routing, problems)
    if (
        problems
        or top is None
        or routing is None
        or group_of is None
        or priority is None
        or any(raw is None for raw in typed.models.values())
    ):
        return None

    unload_timeout = top.unload_timeout or DEFAULT_UNLOAD_TIMEOUT
    models: dict[str, m.ModelConfig] = {}
    for model_id, raw in typed.models.items():
        assert raw is not None  # typing problems were reported, so we returned above
        argv = checker.argv[model_id]
        models[model_id] = m.ModelConfig(
            id=model_id,
            argv=argv,
            cmd=shlex.join(argv),
            cmd_stop=raw.cmd_stop.strip(),
            proxy=checker.proxy[model_id],
            port=typed.ports.get(model_id),
            check_endpoint=raw.check_endpoint,
            ttl=top.global_ttl if raw.ttl == -1 else raw.ttl,
            unload_timeout=raw.unload_timeout or unload_timeout,
            aliases=tuple(dict.fromkeys(raw.aliases)),
            env=dict(raw.env),
            use_model_name=raw.use_model_name,
            name=raw.name,
            description=raw.description,
            unlisted=raw.unlisted,
            concurrency_limit=raw.concurrency_limit,
            send_loading_state=(
                top.send_loading_state if raw.send_loading_state is None else raw.send_loading_state
            ),
            metadata=dict(raw.metadata),
            filters=m.Filters(
                strip_params=tuple(raw.filters.strip_params),
                set_params=dict(raw.filters.set_params),
                set_params_by_id={k: dict(v) for k, v in raw.filters.set_params_by_id.items()},
            ),
            timeouts=m.Timeouts(raw.timeouts.connect, raw.timeouts.response_header),
            group=group_of.get(model_id, m.DEFAULT_GROUP),
            priority=priority.get(model_id, 0),
            protected=raw.protected,
            health_interval=float(health.resolve(raw.health_interval, top.health_interval)),
            health_failures=int(health.resolve(raw.health_failures, top.health_failures)),
            memory=memory[model_id].memory,
            sleep=memory[model_id].sleep,
            sleep_memory=memory[model_id].sleep_memory,
            min_residency=raw.min_residency,
            queue_timeout=top.queue_timeout if raw.queue_timeout is None else raw.queue_timeout,
            autoload=top.autoload if raw.autoload is None else raw.autoload,
            websockets_hold_model=raw.websockets_hold_model,
        )
    return m.Config(
        path=typed.path,
        models=models,
        aliases=dict(checker.alias_owner),
        routing=routing,
        health_check_timeout=top.health_check_timeout,
        log_level=top.log_level,  # type: ignore[arg-type]  # checked against the Literal above
        log_to_stdout=top.log_to_stdout,  # type: ignore[arg-type]
        start_port=top.start_port,
        global_ttl=top.global_ttl,
        unload_timeout=unload_timeout,
        send_loading_state=top.send_loading_state,
        include_aliases_in_list=top.include_aliases_in_list,
        api_keys=top.api_keys,
        preload=preload,
        ignore_paths=ignore,
        activity=_activity(typed.path, top),
        gpu_memory=budget,
        server=server,
        parity=parity,
    )


def _activity(config_path: str, top: RawConfig) -> m.ActivityConfig:
    """``[activity]``; a relative ``db`` is taken from the config file's folder."""
    db = top.activity.db
    if db is not None:
        db = os.path.join(os.path.dirname(os.path.abspath(config_path)), os.path.expanduser(db))
    return m.ActivityConfig(max_entries=top.activity.max_entries, db=db)


def _nvml_error() -> str | None:
    """Why ``"measured"`` cannot work here (None when NVML answers); imported late, as only a
    config that asks for ``"measured"`` needs the NVIDIA library."""
    from llama_swap_trio.upstream import nvml

    return nvml.unavailable_reason()
