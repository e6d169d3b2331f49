"""``llama-swap-trio import-yaml FILE``: a llama-swap ``config.yaml`` as this daemon's TOML.

Every key of llama-swap's ``config.example.yaml`` is either mapped (camelCase to snake_case, the
legacy top-level ``groups``/``matrix`` and ``routing.router.settings.*`` to ``[routing]``,
``routing.scheduler.settings.fifo.priority`` to ``[routing.priority]``, ``env`` lists to tables,
``stripParams`` comma strings to lists, ``~`` pins to ``""``) or listed at the top of the output
as ``# not converted: KEY: why``. Values are copied as written: macros (``${name}``,
``${env.NAME}``, ``${MODEL_ID}``, ``${PORT}``) mean the same here, and a ``cmd: |`` block keeps its
comment lines, which this loader drops the same way.

So that the output passes ``check``, references llama-swap would reject at startup or ignore are
dropped, each with a ``not converted`` line: group members, priorities, preloads, selector targets
and profile pins that name no model; a model whose ``cmd`` lacks ``${PORT}`` and that sets no
``proxy`` (llama-swap's default proxy needs ``${PORT}`` too).

PyYAML's safe loader reads the file (anchors and aliases resolved), with YAML 1.2's scalars as
llama-swap's Go parser has them: only ``true``/``false`` are booleans (YAML 1.1 would make a pin
named ``off`` or a value ``yes`` a bool) and ``1:30`` is no base-60 number. A syntax error is
reported with its line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from llama_swap_trio.config.cmdline import strip_comment_lines
from llama_swap_trio.config.problems import ConfigError
from llama_swap_trio.config.toml_writer import dumps

#: llama-swap top-level key -> ours, for the keys that map one to one
_TOP = {
    "healthCheckTimeout": "health_check_timeout",
    "logLevel": "log_level",
    "logToStdout": "log_to_stdout",
    "startPort": "start_port",
    "sendLoadingState": "send_loading_state",
    "includeAliasesInList": "include_aliases_in_list",
    "globalTTL": "global_ttl",
    "unloadTimeout": "unload_timeout",
    "apiKeys": "api_keys",
}
_TOP_WHY = {
    "logTimeFormat": "the proxy log has one fixed format",
    "logRequests": "unused by llama-swap; every request is in the access log and the feed",
    "captureBuffer": "request/response captures are not implemented",
    "ui": "the web UI has no session-id setting",
    "performance": "system performance monitoring is not implemented",
}
_MODEL = {
    "cmd": "cmd",
    "cmdStop": "cmd_stop",
    "proxy": "proxy",
    "checkEndpoint": "check_endpoint",
    "ttl": "ttl",
    "unloadTimeout": "unload_timeout",
    "aliases": "aliases",
    "useModelName": "use_model_name",
    "name": "name",
    "description": "description",
    "unlisted": "unlisted",
    "sendLoadingState": "send_loading_state",
    "macros": "macros",
    "metadata": "metadata",
}
_MODEL_WHY = {
    "capabilities": "capabilities are not listed in /v1/models by this version",
    "compat": "websockets always count as requests here",
    "healthCheckTimeout": "llama-swap ignores it per model too; use the top-level one",
}
_TIMEOUTS = {"connect": "connect", "responseHeader": "response_header"}
_ENV_NAME = re.compile(r"^[^=\s]+$")


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"


#: the safe loader with YAML 1.2 core-schema booleans and ints (see the module docstring); made
#: with type() so it type-checks with and without PyYAML's stubs installed
_Yaml12Loader: Any = type("_Yaml12Loader", (yaml.SafeLoader,), {})
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)


class _Converter:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def skip(self, key: str, why: str) -> None:
        self.notes.append(f"# not converted: {key}: {why}")

    # -- values ------------------------------------------------------------------------------

    def clean(self, item: object, where: str) -> object:
        """A YAML value as TOML can hold it: nulls dropped (noted), dates and others as strings."""
        if isinstance(item, bool | int | float | str):
            return item
        if isinstance(item, Mapping):
            out: dict[str, object] = {}
            for k, v in item.items():
                if v is None:
                    self.skip(f"{where}.{k}", "null has no TOML form")
                    continue
                out[str(k)] = self.clean(v, f"{where}.{k}")
            return out
        if isinstance(item, list):
            kept = [v for v in item if v is not None]
            if len(kept) < len(item):
                self.skip(where, "null list entries have no TOML form")
            return [self.clean(v, f"{where}[{i}]") for i, v in enumerate(kept)]
        return str(item)

    def macros(self, table: object, where: str) -> dict[str, object]:
        """A macros mapping (or llama-swap's list of one-entry mappings), in order."""
        out: dict[str, object] = {}
        entries: list[Mapping[Any, Any]] = []
        if isinstance(table, Mapping):
            entries = [table]
        elif isinstance(table, list):
            entries = [e for e in table if isinstance(e, Mapping)]
        for entry in entries:
            for name, item in entry.items():
                if item is None:
                    self.skip(f"{where}.{name}", "a macro needs a value")
                else:
                    out[str(name)] = self.clean(item, f"{where}.{name}")
        return out

    def filters(self, table: object, where: str, *, by_id: bool) -> dict[str, object]:
        out: dict[str, object] = {}
        if not isinstance(table, Mapping):
            return out
        for name, item in table.items():
            if item is None:
                continue
            if name in ("stripParams", "strip_params"):
                text = item if isinstance(item, str) else ",".join(str(v) for v in item)
                names = sorted({n.strip() for n in text.split(",") if n.strip()})
                if names:
                    out["strip_params"] = names
            elif name == "setParams":
                out["set_params"] = self.clean(item, f"{where}.setParams")
            elif name == "setParamsByID" and by_id:
                out["set_params_by_id"] = self.clean(item, f"{where}.setParamsByID")
            else:
                self.skip(f"{where}.{name}", "no such filter here")
        return out

    def timeouts(self, table: object, where: str) -> dict[str, object]:
        out: dict[str, object] = {}
        if not isinstance(table, Mapping):
            return out
        for name, item in table.items():
            if name in _TIMEOUTS and item is not None:
                out[_TIMEOUTS[name]] = item
            elif item is not None:
                self.skip(f"{where}.{name}", "only connect and responseHeader timeouts exist here")
        return out

    # -- sections ----------------------------------------------------------------------------

    def model(self, model_id: str, table: Mapping[str, Any]) -> dict[str, object] | None:
        where = f"models.{model_id}"
        out: dict[str, object] = {}
        for name, item in table.items():
            if item is None:
                continue
            path = f"{where}.{name}"
            if name in _MODEL:
                converted = self.macros(item, path) if name == "macros" else self.clean(item, path)
                out[_MODEL[name]] = converted
            elif name == "env":
                out["env"] = self.env(item, path)
            elif name == "filters":
                out["filters"] = self.filters(item, path, by_id=True)
            elif name == "timeouts":
                out["timeouts"] = self.timeouts(item, path)
            elif name == "concurrencyLimit":
                if item:
                    out["concurrency_limit"] = item
                else:
                    self.skip(path, "0 is llama-swap's default of 10; here 0 means no limit")
            elif name in _MODEL_WHY:
                self.skip(path, _MODEL_WHY[name])
            else:
                self.skip(path, "unknown llama-swap model key")
        cmd = out.get("cmd")
        if "proxy" not in out and not (isinstance(cmd, str) and self.uses_port(cmd, out)):
            self.skip(
                where,
                "its cmd does not use ${PORT} and it sets no proxy (llama-swap's "
                "default proxy needs ${PORT} as well)",
            )
            return None
        return {k: v for k, v in out.items() if v != {}}

    def uses_port(self, cmd: str, model: Mapping[str, object]) -> bool:
        """Whether ``cmd`` holds ``${PORT}``, through one level of macros (enough to decide)."""
        macros = {**self.global_macros, **_as_dict(model.get("macros"))}
        text = strip_comment_lines(cmd)
        for _ in range(8):  # macros may use earlier macros
            expanded = re.sub(
                r"\$\{([^{}]*)\}",
                lambda m: str(macros.get(m.group(1), m.group(0))),
                text,
            )
            if expanded == text:
                break
            text = expanded
        return "${PORT}" in text

    def env(self, item: object, where: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if isinstance(item, Mapping):
            return {str(k): str(v) for k, v in item.items() if v is not None}
        for i, entry in enumerate(item if isinstance(item, list) else []):
            name, sep, text = str(entry).partition("=")
            if sep and _ENV_NAME.match(name):
                out[name] = text
            else:
                self.skip(f"{where}[{i}]", f"{entry!r} is not NAME=value")
        return out

    global_macros: dict[str, object]


def _as_dict(item: object) -> dict[str, object]:
    return dict(item) if isinstance(item, Mapping) else {}


def _as_list(item: object) -> list[object]:
    return list(item) if isinstance(item, list) else []


def parse_yaml(text: str, path: str) -> dict[str, Any]:
    """The YAML document as a mapping.

    Raises:
        ConfigError: bad YAML (with line and column) or a document that is not a mapping.
    """
    try:
        doc = yaml.load(text, Loader=_Yaml12Loader)  # a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{path}: {where}{exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys"])
    return doc


def convert(doc: Mapping[str, Any], source: str = "config.yaml") -> str:
    """The TOML text for llama-swap config ``doc`` (see the module docstring)."""
    conv = _Converter()
    out: dict[str, object] = {}
    conv.global_macros = conv.macros(doc.get("macros"), "macros")
    activity: dict[str, object] = {}
    for name, item in doc.items():
        if item is None or name in ("models", "peers", "profiles", "selectors", "macros"):
            continue
        if name in _TOP:
            out[_TOP[name]] = conv.clean(item, name)
        elif name in _TOP_WHY:
            conv.skip(name, _TOP_WHY[name])
        elif name == "metricsMaxInMemory":
            # llama-swap's in-memory activity rows (<= 0 means its default, 1000)
            whole = isinstance(item, int) and not isinstance(item, bool)
            activity["max_entries"] = item if whole and item > 0 else 1000
        elif name == "store":
            store = _as_dict(item)
            if store.get("path") is not None:
                activity["db"] = store["path"]
            for other in store:
                if other != "path":
                    conv.skip(f"store.{other}", "unknown llama-swap key")
        elif name == "upstream":
            upstream = _as_dict(item)
            if upstream.get("ignorePaths") is not None:
                out["upstream"] = {"ignore_paths": conv.clean(upstream["ignorePaths"], name)}
            for other in upstream:
                if other != "ignorePaths":
                    conv.skip(f"upstream.{other}", "unknown llama-swap key")
        elif name in ("hooks", "routing", "groups", "matrix"):
            pass  # below, once the models are known
        else:
            conv.skip(name, "unknown llama-swap key")
    if activity:
        out["activity"] = activity
    if conv.global_macros:
        out["macros"] = conv.global_macros

    models: dict[str, object] = {}
    for model_id, table in _as_dict(doc.get("models")).items():
        if isinstance(table, Mapping):
            converted = conv.model(str(model_id), table)
            if converted is not None:
                models[str(model_id)] = converted
    aliases = _aliases(models)
    names = set(models) | set(aliases)

    preload = _as_list(_as_dict(_as_dict(doc.get("hooks")).get("on_startup")).get("preload"))
    kept = []
    for i, entry in enumerate(preload):
        if entry in names:
            kept.append(entry)
        else:
            conv.skip(
                f"hooks.on_startup.preload[{i}]",
                f"'{entry}' is not a model (llama-swap skips it too)",
            )
    if kept:
        out["hooks"] = {"on_startup": {"preload": kept}}
    for other in _as_dict(doc.get("hooks")):
        if other != "on_startup":
            conv.skip(f"hooks.{other}", "the only hook is on_startup")

    routing = _routing(conv, doc, set(models), names)
    peers, peer_names = _peers(conv, doc)
    selectors = _selectors(conv, doc, names, peer_names)
    profiles = _profiles(conv, doc, names | set(selectors), peer_names)

    if models:
        out["models"] = models
    if routing:
        out["routing"] = routing
    for key, table in (("peers", peers), ("profiles", profiles), ("selectors", selectors)):
        if table:
            out[key] = table
    header = [f"# Converted from {source} by llama-swap-trio import-yaml.", *conv.notes]
    return "\n".join(header) + "\n\n" + dumps(out)


def _aliases(models: Mapping[str, object]) -> set[str]:
    found: set[str] = set()
    for table in models.values():
        model = _as_dict(table)
        found.update(str(a) for a in _as_list(model.get("aliases")))
        by_id = _as_dict(_as_dict(model.get("filters")).get("set_params_by_id"))
        found.update(by_id)
    return found


def _routing(
    conv: _Converter, doc: Mapping[str, Any], model_ids: set[str], names: set[str]
) -> dict[str, object]:
    routing = _as_dict(doc.get("routing"))
    router = _as_dict(routing.get("router"))
    settings = _as_dict(router.get("settings"))
    groups = settings.get("groups")
    matrix = settings.get("matrix")
    use = router.get("use")
    where_groups, where_matrix = "routing.router.settings.groups", "routing.router.settings.matrix"
    if doc.get("groups") is not None:
        groups, where_groups = doc["groups"], "groups"
    if doc.get("matrix") is not None:
        matrix, where_matrix, use = doc["matrix"], "matrix", use or "matrix"
    out: dict[str, object] = {}
    if use in ("group", "matrix"):
        out["router"] = use
    converted_groups: dict[str, object] = {}
    for name, table in _as_dict(groups).items():
        group = _as_dict(table)
        members = []
        for i, member in enumerate(_as_list(group.get("members"))):
            if member in model_ids:
                members.append(member)
            else:
                conv.skip(f"{where_groups}.{name}.members[{i}]", f"no model '{member}'")
        entry: dict[str, object] = {
            k: group[k] for k in ("swap", "exclusive", "persistent") if group.get(k) is not None
        }
        if members:
            converted_groups[str(name)] = {**entry, "members": members}
        else:
            conv.skip(f"{where_groups}.{name}", "none of its members is a model")
    if converted_groups:
        out["groups"] = converted_groups
    if matrix is not None:
        if use == "matrix":
            out["matrix"] = _matrix(conv, _as_dict(matrix), where_matrix, model_ids)
        else:
            conv.skip(where_matrix, "not used: the router is 'group'")
    scheduler = _as_dict(routing.get("scheduler"))
    priority = _as_dict(_as_dict(_as_dict(scheduler.get("settings")).get("fifo")).get("priority"))
    kept: dict[str, object] = {}
    for name, value in priority.items():
        if name in model_ids:
            kept[str(name)] = value
        elif name in names:
            conv.skip(
                f"routing.scheduler.settings.fifo.priority.{name}",
                "an alias; llama-swap looks priorities up by model id, so it has no effect",
            )
        else:
            conv.skip(f"routing.scheduler.settings.fifo.priority.{name}", f"no model '{name}'")
    if kept:
        out["priority"] = kept
    for other in routing:
        if other not in ("router", "scheduler"):
            conv.skip(f"routing.{other}", "unknown llama-swap key")
    return out


def _matrix(
    conv: _Converter, matrix: Mapping[str, Any], where: str, model_ids: set[str]
) -> dict[str, object]:
    out: dict[str, object] = {}
    variables = {}
    for name, target in _as_dict(matrix.get("vars")).items():
        if target in model_ids:
            variables[str(name)] = target
        else:
            conv.skip(f"{where}.vars.{name}", f"no model '{target}'")
    if variables:
        out["vars"] = variables
    for key in ("evict_costs", "sets"):
        if matrix.get(key):
            out[key] = conv.clean(matrix[key], f"{where}.{key}")
    return out


def _peers(conv: _Converter, doc: Mapping[str, Any]) -> tuple[dict[str, object], set[str]]:
    peers: dict[str, object] = {}
    qualified: set[str] = set()
    bare: dict[str, int] = {}
    for peer_id, table in _as_dict(doc.get("peers")).items():
        peer = _as_dict(table)
        where = f"peers.{peer_id}"
        out: dict[str, object] = {}
        for name, item in peer.items():
            if item is None:
                continue
            if name in ("proxy", "models"):
                out[name] = conv.clean(item, f"{where}.{name}")
            elif name == "apiKey":
                out["api_key"] = item
            elif name == "filters":
                out["filters"] = conv.filters(item, f"{where}.filters", by_id=False)
            elif name == "timeouts":
                out["timeouts"] = conv.timeouts(item, f"{where}.timeouts")
            else:
                conv.skip(f"{where}.{name}", "unknown llama-swap peer key")
        peers[str(peer_id)] = {k: v for k, v in out.items() if v != {}}
        for model in _as_list(out.get("models")):
            qualified.add(f"{peer_id}/{model}")
            bare[str(model)] = bare.get(str(model), 0) + 1
    return peers, qualified | {m for m, n in bare.items() if n == 1}


def _selectors(
    conv: _Converter, doc: Mapping[str, Any], names: set[str], peer_names: set[str]
) -> dict[str, object]:
    selectors: dict[str, object] = {}
    for selector_id, table in _as_dict(doc.get("selectors")).items():
        selector = _as_dict(table)
        where = f"selectors.{selector_id}"
        out: dict[str, object] = {}
        for name, item in selector.items():
            if item is None:
                continue
            if name in ("strategy", "name", "description", "unlisted", "metadata"):
                out[name] = conv.clean(item, f"{where}.{name}")
            elif name == "targets":
                targets = []
                for i, target in enumerate(_as_list(item)):
                    if target in names or target in peer_names:
                        targets.append(target)
                    else:
                        conv.skip(f"{where}.targets[{i}]", f"no model '{target}'")
                out["targets"] = targets
            elif name == "settings":
                for setting, value in _as_dict(item).items():
                    if setting == "spillover":
                        out["spillover"] = value
                    else:
                        conv.skip(f"{where}.settings.{setting}", "unknown selector setting")
            else:
                conv.skip(f"{where}.{name}", "unknown llama-swap selector key")
        if out.get("targets"):
            selectors[str(selector_id)] = out
        else:
            conv.skip(where, "none of its targets is a model")
    return selectors


def _profiles(
    conv: _Converter, doc: Mapping[str, Any], names: set[str], peer_names: set[str]
) -> dict[str, object]:
    profiles: dict[str, object] = {}
    for profile_name, table in _as_dict(doc.get("profiles")).items():
        profile = _as_dict(table)
        where = f"profiles.{profile_name}"
        pins: dict[str, str] = {}
        for pin, target in _as_dict(profile.get("pins")).items():
            if target is None or target == "":
                pins[str(pin)] = ""
            elif target in names or target in peer_names:
                pins[str(pin)] = str(target)
            else:
                conv.skip(f"{where}.pins.{pin}", f"no model or selector '{target}'")
        for other in profile:
            if other not in ("pins", "description"):
                conv.skip(f"{where}.{other}", "unknown llama-swap profile key")
        if pins:
            out: dict[str, object] = {"pins": pins}
            if profile.get("description"):
                out = {"description": str(profile["description"]), **out}
            profiles[str(profile_name)] = out
        else:
            conv.skip(where, "none of its pins names a model")
    return profiles


def import_yaml_file(path: str) -> str:
    """Read and convert the llama-swap config at ``path``.

    Raises:
        ConfigError: unreadable file, bad YAML (with line and column), not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc}"]) from None
    return convert(parse_yaml(text, path), source=path.rsplit("/", 1)[-1])
