"""The raw TOML shape of the configuration, and the strict converter that checks it.

These attrs classes are *shape only*: field names are the TOML keys (snake_case, SPEC 2.1-2.3),
types are what TOML must hold there, defaults are the ones a missing key gets. Value ranges and
cross references are checked afterwards, by :mod:`llama_swap_trio.config.validate`, where the key
path of every problem is known (attrs validators lose it; research/python-stack.md 5.2).

cattrs' stock hooks coerce silently (``"300"`` -> 300, ``"false"`` -> True, ``"abc"`` -> a tuple of
letters), so the converter here replaces every scalar and container hook with a strict one.
:func:`structure` turns every error into ``(key path, message)`` problems.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any, NewType, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn

from llama_swap_trio.config.problems import KeyPath, describe_value, unknown_key_message

#: ``env``: a table of strings, or a list of ``"NAME=value"`` strings; structured to a dict.
EnvTable = NewType("EnvTable", dict[str, str])
#: ``filters.strip_params``: a list of strings, or one comma-separated string; structured to a
#: tuple of the non-empty, trimmed names.
NameList = NewType("NameList", tuple[str, ...])


@attrs.frozen
class RawTimeouts:
    connect: float = 30.0
    response_header: float = 0.0


@attrs.frozen
class RawFilters:
    strip_params: NameList = NameList(())
    set_params: dict[str, object] = attrs.field(factory=dict)
    set_params_by_id: dict[str, dict[str, object]] = attrs.field(factory=dict)


@attrs.frozen
class RawSleep:
    """``models.<id>.sleep``: the two endpoints of a sleep mode (checked by config.memory)."""

    sleep: str
    wake: str


@attrs.frozen
class RawModel:
    cmd: str
    cmd_stop: str = ""
    #: None = not set; the default ``http://127.0.0.1:${PORT}`` is applied by the loader
    proxy: str | None = None
    check_endpoint: str = "/health"
    ttl: int = -1
    unload_timeout: int = 0
    aliases: tuple[str, ...] = ()
    env: EnvTable = attrs.field(factory=lambda: EnvTable({}))
    use_model_name: str = ""
    name: str = ""
    description: str = ""
    unlisted: bool = False
    concurrency_limit: int = 0
    #: None = inherit the global value
    send_loading_state: bool | None = None
    #: consumed by macro expansion before structuring; kept here so the key is known
    macros: dict[str, object] = attrs.field(factory=dict)
    metadata: dict[str, object] = attrs.field(factory=dict)
    filters: RawFilters = attrs.field(factory=RawFilters)
    timeouts: RawTimeouts = attrs.field(factory=RawTimeouts)
    #: scheduling (SPEC 6.5); None = the global value
    protected: bool = False
    #: health watchdog (SPEC 6.4); None = the global value
    health_interval: float | None = None
    health_failures: int | None = None
    #: a size (int or string) or "measured"; parsed by config.memory, None = not set
    memory: object = None
    sleep: RawSleep | None = None
    #: a size (int or string); parsed by config.memory
    sleep_memory: object = 0
    min_residency: float = 0.0
    queue_timeout: float | None = None
    autoload: bool | None = None
    websockets_hold_model: bool = True


@attrs.frozen
class RawGroup:
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@attrs.frozen
class RawMatrix:
    vars: dict[str, str] = attrs.field(factory=dict)
    evict_costs: dict[str, int] = attrs.field(factory=dict)
    sets: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class RawRouting:
    router: str = "group"
    groups: dict[str, RawGroup] = attrs.field(factory=dict)
    matrix: RawMatrix | None = None
    priority: dict[str, int] = attrs.field(factory=dict)
    starvation_after: float = 30.0


@attrs.frozen
class RawOnStartup:
    preload: tuple[str, ...] = ()


@attrs.frozen
class RawHooks:
    on_startup: RawOnStartup = attrs.field(factory=RawOnStartup)


@attrs.frozen
class RawUpstream:
    #: None = not set (the default pattern applies)
    ignore_paths: tuple[str, ...] | None = None


@attrs.frozen
class RawActivity:
    max_entries: int = 10_000
    #: None = not set (history in memory only)
    db: str | None = None


@attrs.frozen
class RawResources:
    #: a size (int or string); parsed by config.memory, None = no budget
    gpu_memory: object = None


@attrs.frozen
class RawServer:
    """``[server]`` (SPEC 6.1)."""

    head_timeout: float = 30.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 75.0
    max_connections: int = 0
    #: None = not set (both or neither; checked by validation)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()


@attrs.frozen
class RawConfig:
    """The top level, without ``models`` and ``routing``: those are structured separately (one
    model at a time) so that a typo in one place does not hide problems in another."""

    health_check_timeout: int = 120
    log_level: str = "info"
    log_to_stdout: str = "proxy"
    start_port: int = 5800
    global_ttl: int = 0
    unload_timeout: int = 10
    send_loading_state: bool = False
    include_aliases_in_list: bool = False
    api_keys: tuple[str, ...] = ()
    queue_timeout: float = 0.0
    autoload: bool = True
    macros: dict[str, object] = attrs.field(factory=dict)
    hooks: RawHooks = attrs.field(factory=RawHooks)
    upstream: RawUpstream = attrs.field(factory=RawUpstream)
    activity: RawActivity = attrs.field(factory=RawActivity)
    health_interval: float = 10.0
    health_failures: int = 3
    resources: RawResources = attrs.field(factory=RawResources)
    server: RawServer = attrs.field(factory=RawServer)
    # Structured on their own (see the class docstring); declared so they count as known keys.
    models: dict[str, object] = attrs.field(factory=dict)
    routing: dict[str, object] = attrs.field(factory=dict)
    peers: dict[str, object] = attrs.field(factory=dict)
    profiles: dict[str, object] = attrs.field(factory=dict)
    selectors: dict[str, object] = attrs.field(factory=dict)


class SchemaProblems(Exception):
    """Raised by our hooks: problems relative to the value being structured."""

    def __init__(self, problems: list[tuple[KeyPath, str]]) -> None:
        super().__init__(problems)
        self.problems = problems

    @classmethod
    def one(cls, message: str) -> SchemaProblems:
        return cls([((), message)])


# -- strict scalar hooks -------------------------------------------------------------------------


def _structure_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise SchemaProblems.one(f"expected str, got {describe_value(value)}")
    return value


def _structure_int(value: object, _: object) -> int:
    # bool is an int subclass in Python; in TOML it is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise SchemaProblems.one(f"expected int, got {describe_value(value)}")
    return value


def _structure_float(value: object, _: object) -> float:
    # An int is a fine number of seconds (``connect = 5``); a bool or a string is not.
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SchemaProblems.one(f"expected float, got {describe_value(value)}")
    return float(value)


def _structure_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise SchemaProblems.one(f"expected bool, got {describe_value(value)}")
    return value


def _structure_any(value: object, _: object) -> object:
    return value


def _structure_env(value: object, _: object) -> dict[str, str]:
    problems: list[tuple[KeyPath, str]] = []
    env: dict[str, str] = {}
    if isinstance(value, dict):
        for name, item in value.items():
            if isinstance(item, str):
                env[name] = item
            else:
                problems.append(((name,), f"expected str, got {describe_value(item)}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str) and "=" in item:
                name, _, text = item.partition("=")
                env[name] = text
            else:
                got = f"got {describe_value(item)}"
                problems.append(((index,), f'expected a "NAME=value" string, {got}'))
    else:
        problems.append(((), f"expected a table of strings, got {describe_value(value)}"))
    if problems:
        raise SchemaProblems(problems)
    return env


def _structure_name_list(value: object, _: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        bad = [
            ((i,), f"expected str, got {describe_value(item)}")
            for i, item in enumerate(value)
            if not isinstance(item, str)
        ]
        if bad:
            raise SchemaProblems(list[tuple[KeyPath, str]](bad))
        items = value
    else:
        got = describe_value(value)
        raise SchemaProblems.one(f"expected an array of strings or one string, got {got}")
    return tuple(name.strip() for name in items if name.strip())


# -- strict container hooks ----------------------------------------------------------------------

_T = TypeVar("_T")


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_str_dict(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin in (dict, Mapping) and len(typing.get_args(tp)) == 2


def _collect(
    items: list[tuple[str | int, object]], item_type: Any, conv: cattrs.Converter
) -> list[object]:
    """Structure every item, gathering all failures (with the item's key) before raising."""
    out: list[object] = []
    problems: list[tuple[KeyPath, str]] = []
    for key, item in items:
        try:
            out.append(conv.structure(item, item_type))
        except Exception as exc:  # every structuring failure becomes a problem line
            problems.extend(((key, *path), msg) for path, msg in flatten_error(exc))
    if problems:
        raise SchemaProblems(problems)
    return out


def _tuple_hook_factory(tp: Any, conv: cattrs.Converter) -> Callable[[object, Any], object]:
    item_type = typing.get_args(tp)[0]

    def hook(value: object, _: Any) -> tuple[object, ...]:
        if not isinstance(value, list):
            raise SchemaProblems.one(f"expected an array, got {describe_value(value)}")
        return tuple(_collect(list(enumerate(value)), item_type, conv))

    return hook


def _dict_hook_factory(tp: Any, conv: cattrs.Converter) -> Callable[[object, Any], object]:
    item_type = typing.get_args(tp)[1]

    def hook(value: object, _: Any) -> dict[str, object]:
        if not isinstance(value, dict):
            raise SchemaProblems.one(f"expected a table, got {describe_value(value)}")
        values = _collect(list(value.items()), item_type, conv)
        return dict(zip(value.keys(), values, strict=True))

    return hook


def _class_hook_factory(cl: Any, conv: cattrs.Converter) -> Callable[[object, Any], object]:
    inner = make_dict_structure_fn(cl, conv, _cattrs_forbid_extra_keys=True)

    def hook(value: object, _: Any) -> object:
        # Checked here because the generated function would fail with an obscure TypeError.
        if not isinstance(value, dict):
            raise SchemaProblems.one(f"expected a table, got {describe_value(value)}")
        return inner(value, cl)

    return hook


def make_converter() -> cattrs.Converter:
    """A converter that accepts exactly the TOML shapes of :mod:`schema` and nothing else."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    # A predicate, not register_structure_hook(object): singledispatch would match every class.
    conv.register_structure_hook_func(lambda t: t is object, _structure_any)
    conv.register_structure_hook(EnvTable, _structure_env)
    conv.register_structure_hook(NameList, _structure_name_list)
    conv.register_structure_hook_factory(
        _is_homogeneous_tuple, lambda t: _tuple_hook_factory(t, conv)
    )
    conv.register_structure_hook_factory(_is_str_dict, lambda t: _dict_hook_factory(t, conv))
    conv.register_structure_hook_factory(attrs.has, lambda t: _class_hook_factory(t, conv))
    return conv


CONVERTER = make_converter()


def flatten_error(exc: BaseException) -> list[tuple[KeyPath, str]]:
    """Every problem in a (possibly nested) structuring error, with its relative key path."""
    if isinstance(exc, SchemaProblems):
        return exc.problems
    if isinstance(exc, ClassValidationError):
        found: list[tuple[KeyPath, str]] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            found.extend(((note.name, *path), msg) for path, msg in flatten_error(sub))
        for sub in without:
            found.extend(flatten_error(sub))
        return found
    if isinstance(exc, IterableValidationError):
        found = []
        with_index, without = exc.group_exceptions()
        for sub, index_note in with_index:
            found.extend(((index_note.index, *path), msg) for path, msg in flatten_error(sub))
        for sub in without:
            found.extend(flatten_error(sub))
        return found
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [field.name for field in attrs.fields(exc.cl)]
        return [((key,), unknown_key_message(key, known)) for key in sorted(exc.extra_fields)]
    if isinstance(exc, KeyError):
        return [((), "required key is missing")]
    return [((), f"invalid value ({exc})")]


def structure(value: object, cl: type[_T]) -> tuple[_T | None, list[tuple[KeyPath, str]]]:
    """``value`` as an instance of ``cl`` and the problems found.

    When some keys of a table are wrong (unknown, mistyped), the rest is still typed, with
    defaults for the wrong ones, so later checks can report the problems of the other keys in
    the same run. A wrong key inside a nested table (``server.head_timeout``) is left out of that
    table only, so its neighbours (``server.cors_origins``) are still checked. None when even
    that fails (e.g. a required key is missing).
    """
    try:
        return CONVERTER.structure(value, cl), []
    except Exception as exc:  # every structuring failure becomes a problem line
        problems = flatten_error(exc)
    pruned = _without(value, [key_path for key_path, _ in problems])
    if pruned is not None:
        try:
            return CONVERTER.structure(pruned, cl), problems
        except Exception:  # a required key is among them: fall back to whole top-level keys
            pass
    if isinstance(value, dict):
        wrong = {key_path[0] for key_path, _ in problems if key_path}
        rest = {key: item for key, item in value.items() if key not in wrong}
        if len(rest) < len(value):
            try:
                return CONVERTER.structure(rest, cl), problems
            except Exception:  # still wrong without them: report what the first pass found
                pass
    return None, problems


def _without(value: object, key_paths: list[KeyPath]) -> object | None:
    """A copy of ``value`` without the table keys that ``key_paths`` point into.

    Each path is cut before its first array index (an array is dropped whole, so the positions
    that later checks name stay those of the file). None when a path names no table key.
    """
    if not isinstance(value, dict):
        return None
    pruned: dict[str, object] = dict(value)
    for key_path in key_paths:
        keys: list[str] = []
        for part in key_path:
            if not isinstance(part, str):
                break
            keys.append(part)
        if not keys:
            return None
        node = pruned
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                break
            node[key] = child = dict(child)  # copied: the document stays as it was
            node = child
        else:
            node.pop(keys[-1], None)
    return pruned
