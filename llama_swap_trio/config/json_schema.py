"""``llama-swap-trio schema``: a JSON Schema of the TOML format, made from the loader's classes.

One source of truth: the schema is built from the same attrs classes the strict converter types
a document with (:mod:`.schema`, :mod:`.parity_schema`, and whatever other modules add to them),
so a key added there is in the schema too. Field types map to JSON Schema as the converter reads
them: ``str``, ``int`` (never a bool), ``float`` (an int is fine), ``bool``, ``tuple[X, ...]`` as
an array, ``dict[str, X]`` as an object, ``X | None`` as X (None only means "not set"), an attrs
class as an object with exactly its fields. ``env`` is a table of strings or a list of
``"NAME=value"``; ``filters.strip_params`` an array of strings or one comma-separated string.

The top level types ``models``, ``routing``, ``peers``, ``profiles`` and ``selectors`` in
separate passes (so one bad model does not hide the others); :data:`SEPARATE` says which class
each of their tables is. On top of the shape the schema carries the value sets of the enum keys
(``log_level``...), which editors offer as completions. Two properties hold and are tested: every
document the loader accepts validates, and every document that validates passes the loader's
typing stage (unknown keys and wrong types are exactly the schema's errors).

Editors: Taplo and VS Code's Even Better TOML read a ``#:schema PATH-OR-URL`` comment on the first
line of the file (see docs/configuration.md).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from llama_swap_trio.config import model as m
from llama_swap_trio.config.parity_model import STRATEGIES
from llama_swap_trio.config.parity_schema import RawPeer, RawProfile, RawSelector
from llama_swap_trio.config.schema import EnvTable, NameList, RawConfig, RawModel, RawRouting

SCHEMA_ID = "https://llama-swap-trio.invalid/config.schema.json"

#: top-level keys typed on their own: each is a table of these (``routing`` is one of these)
SEPARATE: dict[str, tuple[type[Any], bool]] = {
    "models": (RawModel, True),
    "routing": (RawRouting, False),
    "peers": (RawPeer, True),
    "profiles": (RawProfile, True),
    "selectors": (RawSelector, True),
}

#: (class, field) -> the values validation allows (offered by editors as completions)
ENUMS: dict[tuple[type[Any], str], tuple[str, ...]] = {
    (RawConfig, "log_level"): typing.get_args(m.LogLevel),
    (RawConfig, "log_to_stdout"): typing.get_args(m.LogToStdout),
    (RawRouting, "router"): typing.get_args(m.RouterKind),
    (RawSelector, "strategy"): STRATEGIES,
}


def _type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one field type (see the module docstring)."""
    if tp is EnvTable:
        return {
            "oneOf": [
                {"type": "object", "additionalProperties": {"type": "string"}},
                {"type": "array", "items": {"type": "string", "pattern": "="}},
            ]
        }
    if tp is NameList:
        return {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is object or tp is Any:
        return {}
    if attrs.has(tp):
        return class_schema(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin in (dict, Mapping) and len(args) == 2:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    if origin in (typing.Union, type(int | None)):
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return _type_schema(kinds[0])
        return {"anyOf": [_type_schema(a) for a in kinds]}
    return {}  # a type this generator does not know: accept anything rather than reject


def _default(field: attrs.Attribute[Any]) -> tuple[bool, object]:
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # Factory is a class
        if default.takes_self:
            return False, None
        default = default.factory()
    if default is attrs.NOTHING or default is None or attrs.has(type(default)):
        return False, None
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, dict) and default:
        return False, None
    return True, default


def class_schema(cl: type[Any]) -> dict[str, Any]:
    """An attrs class as an object schema: exactly its fields, the required ones required."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    hints = typing.get_type_hints(cl)
    for field in attrs.fields(cl):
        if cl is RawConfig and field.name in SEPARATE:
            kind, many = SEPARATE[field.name]
            item = class_schema(kind)
            properties[field.name] = (
                {"type": "object", "additionalProperties": item} if many else item
            )
            continue
        prop = _type_schema(hints[field.name])
        enum = ENUMS.get((cl, field.name))
        if enum:
            prop = {**prop, "enum": list(enum)}
        has_default, default = _default(field)
        if field.default is attrs.NOTHING:
            required.append(field.name)
        elif has_default:
            prop = {**prop, "default": default}
        properties[field.name] = prop
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07, which Taplo reads) of a whole config file."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "llama-swap-trio configuration",
        "description": "The TOML config of llama-swap-trio (docs/configuration.md).",
        **class_schema(RawConfig),
    }


def schema_text() -> str:
    """:func:`config_schema` as indented JSON text, as the ``schema`` command prints it."""
    return json.dumps(config_schema(), indent=2) + "\n"
