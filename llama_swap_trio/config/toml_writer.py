"""A small TOML writer for the documents :mod:`.import_yaml` produces.

Only what a converted config holds: tables of strings, ints, floats, bools, arrays and tables.
Tables become ``[section]`` headers, except small ones (one short line) which are written inline,
so ``timeouts = { connect = 5 }`` reads as a person would write it. Multi-line strings (a ``cmd``
block) are written as literal ``'''`` strings, so their comment lines and backslashes stay as they
were. Everything else uses TOML basic strings (JSON's escapes are valid TOML escapes).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
#: an inline table longer than this is written as a section instead
INLINE_WIDTH = 72


def key(name: str) -> str:
    """A TOML key: bare when it can be, else a quoted basic string."""
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def _string(text: str) -> str:
    literal_ok = (
        "\n" in text
        and "'''" not in text
        and not text.endswith("'")
        and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
    )
    if literal_ok:
        return "'''\n" + text + "'''"  # TOML drops the newline right after the opening quotes
    return json.dumps(text, ensure_ascii=False)


def value(item: object) -> str:
    """One value on one line (strings with newlines may span lines)."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item):
            return "nan"
        if math.isinf(item):
            return "inf" if item > 0 else "-inf"
        return repr(item)
    if isinstance(item, str):
        return _string(item)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, Mapping):
        if not item:
            return "{}"
        return "{ " + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in item.items()) + " }"
    raise TypeError(f"no TOML form for {type(item).__name__}")


def _inline(item: Mapping[str, object], indent: int) -> bool:
    """Whether a table is small enough to write on its key's line."""
    text = value(item)
    return "\n" not in text and len(text) + indent <= INLINE_WIDTH


def dumps(doc: Mapping[str, object]) -> str:
    """``doc`` as TOML text: its plain values first, then one section per table."""
    lines: list[str] = []
    _table(doc, (), lines)
    return "\n".join(lines).strip() + "\n"


def _table(table: Mapping[str, object], path: tuple[str, ...], lines: list[str]) -> None:
    sections: list[tuple[str, Mapping[str, object]]] = []
    plain: list[str] = []
    for name, item in table.items():
        if isinstance(item, Mapping) and item and (not path or not _inline(item, len(name) + 3)):
            sections.append((name, item))
        else:
            plain.append(f"{key(name)} = {value(item)}")
    if plain:
        if path:
            lines.append("")
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        lines.extend(plain)
    for name, item in sections:
        _table(item, (*path, name), lines)
