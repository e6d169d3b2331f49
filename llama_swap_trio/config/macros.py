"""Macro expansion (SPEC 2.4), on the parsed TOML document before it is typed.

Expanding before typing is what lets ``ttl = "${t}"`` become the int of ``t``: a value that is
exactly one macro takes the macro's own type, and then the strict typing pass checks it like any
literal. Inside a longer string a value is stringified, TOML style (``true``, ``60``, ``0.5``).

Scopes and order follow llama-swap:

- global macros are evaluated in table order, each may use the ones before it;
- a model's scope is the global list with the model's macros overriding same-named entries *in
  place* and new ones appended, evaluated again in that order. So ``args = "-c ${ctx}"`` defined
  globally picks up a model's own ``ctx``, and a forward reference is an error in either scope;
- ``${MODEL_ID}``, ``${PORT}``, ``${PID}`` and ``${env.NAME}`` are left alone while macros are
  evaluated and resolved in the field that finally uses them, so a global macro may hold them.

``${PORT}`` numbering needs every model's ``cmd`` with user macros expanded first (a macro may
introduce ``${PORT}``), so models are expanded in two passes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from llama_swap_trio.config.cmdline import strip_comment_lines
from llama_swap_trio.config.problems import KeyPath, Problems, toml_type_name

MACRO_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
RESERVED = frozenset({"PORT", "MODEL_ID", "PID"})
_REF = re.compile(r"\$\{([^{}]*)\}")
#: a ``${`` that no ``}`` closes before the next brace or the end (``--id ${MODEL_ID``)
_UNCLOSED = re.compile(r"\$\{(?![^{}]*\})")
_ENV_PREFIX = "env."
DEFAULT_START_PORT = 5800

Scalar = str | int | float | bool


def stringify(value: object) -> str:
    """A macro value inside a longer string: TOML spelling for bools, plain digits for numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@attrs.define
class _Macro:
    name: str
    raw: object
    #: where it is defined, for messages
    path: KeyPath
    #: defined in the model's own table (problems are reported once per table, not per model)
    own: bool
    value: object = None
    #: its definition is invalid (already reported): uses of it are not reported again
    broken: bool = False


@attrs.frozen
class MacroResult:
    #: the document with every macro substituted (model ``macros`` tables left as they were)
    doc: dict[str, Any]
    #: model id -> its ``${PORT}``, for the models whose ``cmd`` uses ``${PORT}``
    ports: dict[str, int]


def _definitions(table: object, path: KeyPath, own: bool, problems: Problems) -> list[_Macro]:
    """The entries of a ``macros`` table, checking names and value types."""
    if not isinstance(table, dict):
        return []  # the typing pass reports a macros key that is not a table
    found: list[_Macro] = []
    for name, raw in table.items():
        where = (*path, name)
        macro = _Macro(name, raw, where, own)
        if name in RESERVED:
            problems.add(where, f"'{name}' is a reserved macro name and cannot be defined")
            continue
        if not MACRO_NAME.match(name):
            problems.add(where, "macro names must match ^[A-Za-z0-9_-]{1,63}$")
            macro.broken = True
        if not isinstance(raw, str | int | float | bool):
            problems.add(
                where,
                f"macro values must be a string, int, float or bool, got {toml_type_name(raw)}",
            )
            macro.broken = True
        found.append(macro)
    return found


def _evaluate(entries: list[_Macro], problems: Problems, report_all: bool) -> dict[str, _Macro]:
    """Expand each macro with the ones before it; returns name -> evaluated macro, in order."""
    position = {m.name: i for i, m in enumerate(entries)}
    done: dict[str, _Macro] = {}
    for index, macro in enumerate(entries):
        report = report_all or macro.own
        if macro.broken or not isinstance(macro.raw, str):
            macro.value = macro.raw
            done[macro.name] = macro
            continue
        failed = False

        def substitute(
            match: re.Match[str], macro: _Macro = macro, index: int = index, report: bool = report
        ) -> object:
            nonlocal failed
            name = match.group(1)
            if name in RESERVED or name.startswith(_ENV_PREFIX):
                return match.group(0)  # resolved in the field that uses this macro
            message = None
            if name == macro.name:
                message = f"macro '{name}' refers to itself"
            elif name in done and position[name] < index:
                used = done[name]
                if not used.broken:
                    return used.value
            elif name in position:
                message = (
                    f"macro '{macro.name}' uses '${{{name}}}', which is defined after it; "
                    "a macro may only use macros defined before it"
                )
            else:
                message = f"unknown macro '${{{name}}}'"
            failed = True
            if message is not None and report:
                problems.add(macro.path, message)
            return match.group(0)

        whole = _REF.fullmatch(macro.raw)
        if whole is not None:
            macro.value = substitute(whole)  # exactly one macro: keep the used macro's type
        else:
            macro.value = _REF.sub(lambda m: stringify(substitute(m)), macro.raw)
        macro.broken = failed
        done[macro.name] = macro
    return done


@attrs.define
class _Context:
    """What a field's expansion may use."""

    macros: dict[str, _Macro]
    environ: Mapping[str, str]
    problems: Problems
    model_id: str | None = None
    port: int | None = None
    #: ``${PID}`` is kept for stop time (only in ``cmd_stop``)
    allow_pid: bool = False

    def expand(self, value: object, path: KeyPath) -> object:
        """``value`` (any TOML value) with macros substituted in every string, keys untouched."""
        if isinstance(value, str):
            return self.expand_string(value, path)
        if isinstance(value, dict):
            return {key: self.expand(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.expand(item, (*path, i)) for i, item in enumerate(value)]
        return value

    def expand_string(self, text: str, path: KeyPath, nested: bool = False) -> object:
        unclosed = _UNCLOSED.search(text)
        if unclosed is not None and not nested:
            rest = text[unclosed.start() : unclosed.start() + 24]
            self.problems.add(path, f"unclosed '${{' (no '}}' after {rest!r})")

        def substitute(match: re.Match[str]) -> object:
            return self._resolve(match.group(1), match.group(0), path, nested)

        whole = _REF.fullmatch(text)
        if whole is not None:
            return substitute(whole)
        return _REF.sub(lambda m: stringify(substitute(m)), text)

    def _resolve(self, name: str, literal: str, path: KeyPath, nested: bool) -> object:
        macro = self.macros.get(name)
        if macro is not None and not nested:
            if macro.broken:
                return literal  # its definition was reported; do not report every use
            if isinstance(macro.value, str):
                # Evaluated macros still hold the reserved and env references.
                return self.expand_string(macro.value, path, nested=True)
            return macro.value
        message: str
        if name.startswith(_ENV_PREFIX):
            env_name = name[len(_ENV_PREFIX) :]
            value = self.environ.get(env_name)
            if value is not None and env_name:
                return value
            message = f"environment variable '{env_name}' is not set"
        elif name == "MODEL_ID" and self.model_id is not None:
            return self.model_id
        elif name == "PORT" and self.port is not None:
            return self.port
        elif name == "PID" and self.allow_pid:
            return literal
        elif name in RESERVED and self.model_id is None:
            message = f"${{{name}}} is only available in a model's settings"
        elif name == "PID":
            message = "${PID} is only available in cmd_stop"
        elif name == "PORT" and path[-1:] == ("proxy",) and len(path) == 3:
            message = (
                "proxy uses ${PORT} but cmd does not; "
                "a model gets a port only when its cmd uses ${PORT}"
            )
        elif name == "PORT":
            message = "${PORT} is only available when cmd uses ${PORT}"
        else:
            message = f"unknown macro '{literal}'"
        self.problems.add(path, message)
        return literal


def _uses_port(cmd: object, macros: dict[str, _Macro]) -> bool:
    """Whether ``cmd``, with comment lines dropped and user macros expanded, holds ``${PORT}``."""
    if not isinstance(cmd, str):
        return False

    def user_only(match: re.Match[str]) -> str:
        macro = macros.get(match.group(1))
        if macro is None or macro.broken:
            return match.group(0)
        return stringify(macro.value)

    return "${PORT}" in _REF.sub(user_only, strip_comment_lines(cmd))


def _model_scope(
    global_defs: list[_Macro], table: dict[str, Any], model_path: KeyPath, problems: Problems
) -> dict[str, _Macro]:
    entries = [attrs.evolve(m) for m in global_defs]
    index = {m.name: i for i, m in enumerate(entries)}
    for macro in _definitions(table.get("macros"), (*model_path, "macros"), True, problems):
        if macro.name in index:
            entries[index[macro.name]] = macro  # override in place: later globals see it
        else:
            entries.append(macro)
    return _evaluate(entries, problems, report_all=False)


def _expand_model(table: dict[str, Any], path: KeyPath, context: _Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = (*path, key)
        if key == "macros":
            out[key] = value
        elif key in ("cmd", "cmd_stop") and isinstance(value, str):
            context.allow_pid = key == "cmd_stop"
            out[key] = context.expand_string(strip_comment_lines(value), where)
            context.allow_pid = False
        elif key == "filters" and isinstance(value, dict):
            out[key] = _expand_filters(value, where, context)
        else:
            out[key] = context.expand(value, where)
    return out


def _expand_filters(filters: dict[str, Any], path: KeyPath, context: _Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in filters.items():
        where = (*path, key)
        if key != "set_params_by_id" or not isinstance(value, dict):
            out[key] = context.expand(value, where)
            continue
        # The one place where table keys are expanded too: they are names a request may use.
        by_id: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for raw_key, params in value.items():
            new_key = stringify(context.expand_string(raw_key, (*where, raw_key)))
            if new_key in by_id:
                context.problems.add(
                    (*where, raw_key),
                    f"keys '{origin[new_key]}' and '{raw_key}' both become '{new_key}'",
                )
                continue
            origin[new_key] = raw_key
            by_id[new_key] = context.expand(params, (*where, raw_key))
        out[key] = by_id
    return out


def _number_ports(users: list[str], start: int, pinned: Mapping[str, int]) -> dict[str, int]:
    """Consecutive ports from ``start`` in sorted id order; pinned ids keep theirs, the others
    skip the pinned ports."""
    ports = {m: pinned[m] for m in users if m in pinned}
    taken = set(ports.values())
    port = start
    for model_id in users:
        if model_id in ports:
            continue
        while port in taken:
            port += 1
        ports[model_id] = port
        port += 1
    return {m: ports[m] for m in users}


def expand_macros(
    doc: dict[str, Any],
    environ: Mapping[str, str],
    problems: Problems,
    pinned_ports: Mapping[str, int] | None = None,
) -> MacroResult:
    """Substitute every macro in ``doc`` (SPEC 2.4), reporting problems into ``problems``.

    Args:
        pinned_ports: model id -> ``${PORT}`` it must keep (a reload keeps a running model's
            port); the other models are numbered from ``start_port`` as usual, skipping these.
    """
    global_defs = _definitions(doc.get("macros"), ("macros",), False, problems)
    global_macros = _evaluate([attrs.evolve(m) for m in global_defs], problems, report_all=True)
    top = _Context(global_macros, environ, problems)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out[key] = value if key in ("macros", "models") else top.expand(value, (key,))

    models = doc.get("models")
    if not isinstance(models, dict):
        return MacroResult(out, {})

    scopes: dict[str, dict[str, _Macro]] = {}
    for model_id, table in models.items():
        if isinstance(table, dict):
            scopes[model_id] = _model_scope(global_defs, table, ("models", model_id), problems)

    start = out.get("start_port", DEFAULT_START_PORT)
    if not isinstance(start, int) or isinstance(start, bool):
        start = DEFAULT_START_PORT  # the typing pass reports it; number the ports anyway
    users = sorted(m for m, scope in scopes.items() if _uses_port(models[m].get("cmd"), scope))
    ports = _number_ports(users, start, pinned_ports or {})

    expanded: dict[str, Any] = {}
    for model_id, table in models.items():
        if model_id not in scopes:
            expanded[model_id] = table
            continue
        context = _Context(
            scopes[model_id], environ, problems, model_id=model_id, port=ports.get(model_id)
        )
        expanded[model_id] = _expand_model(table, ("models", model_id), context)
    out["models"] = expanded
    return MacroResult(out, ports)
