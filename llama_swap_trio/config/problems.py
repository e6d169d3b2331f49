"""Config problems: key paths, their TOML-like spelling, and the :class:`ConfigError` they raise.

Every stage of the loader (TOML parsing, macros, typing, validation) reports problems as
``(key path, message)`` pairs into one :class:`Problems` list, so that a bad file is reported
completely in one go, one line per problem: ``config.toml: models.qwen.ttl: expected int, ...``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence

#: A key path: table keys (str) and array indexes (int), e.g. ``("models", "qwen", "aliases", 0)``.
KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_key(key: str) -> str:
    """A table key as TOML would spell it: bare when it can be, else a quoted string."""
    if _BARE_KEY.match(key):
        return key
    # json.dumps quotes and escapes exactly like a TOML basic string for printable text.
    return json.dumps(key, ensure_ascii=False)


def format_path(path: KeyPath) -> str:
    """``("models", "org/m:q4", "aliases", 0)`` -> ``models."org/m:q4".aliases[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + format_key(part)
    return text or "(top level)"


def describe_value(value: object) -> str:
    """``str '300'``, ``bool True``, ``array``...: what a wrong value was, for messages."""
    kind = toml_type_name(value)
    if isinstance(value, dict | list):
        return kind
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def toml_type_name(value: object) -> str:
    """The name a user thinks of for a parsed TOML value's type."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


#: a known key at most this many edits away (insert, delete, replace, swap two neighbours) is
#: suggested for an unknown one: ``tll`` -> ``ttl``, ``unlod_timeout`` -> ``unload_timeout``
MAX_SUGGESTION_EDITS = 2


def edit_distance(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``: insertions, deletions, substitutions and transpositions of two
    neighbours (the optimal string alignment distance)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    """``unknown key``, with a ``did you mean`` hint when a known key is within
    :data:`MAX_SUGGESTION_EDITS` edits (the closest; ties go to the most similar), or failing
    that, one that difflib finds close."""
    candidates = sorted(
        (edit_distance(key, name), -difflib.SequenceMatcher(None, key, name).ratio(), name)
        for name in set(known)
    )
    # at most two edits, and fewer than half the key's letters (``nope`` is two edits from
    # ``name`` too, but that is a different word)
    if candidates and candidates[0][0] <= MAX_SUGGESTION_EDITS and candidates[0][0] * 2 < len(key):
        return f"unknown key (did you mean '{candidates[0][2]}'?)"
    # farther, but clearly the same word (``gpu_mem`` -> ``gpu_memory``)
    close = difflib.get_close_matches(key, sorted(set(known)), n=1, cutoff=0.7)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return "unknown key"


class ConfigError(Exception):
    """The configuration is invalid. ``problems`` holds one line per problem, each naming the file
    and the key path; ``str()`` joins them with newlines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Problems:
    """An ordered, duplicate-free collection of ``(key path, message)`` problems."""

    def __init__(self) -> None:
        self._items: list[tuple[KeyPath, str]] = []
        self._seen: set[tuple[KeyPath, str]] = set()

    def add(self, path: KeyPath, message: str) -> None:
        item = (tuple(path), message)
        if item not in self._seen:
            self._seen.add(item)
            self._items.append(item)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[KeyPath, str]]:
        return list(self._items)

    @property
    def paths(self) -> set[KeyPath]:
        return {path for path, _ in self._items}

    def lines(self, file: str) -> list[str]:
        return [f"{file}: {format_path(path)}: {message}" for path, message in self._items]
