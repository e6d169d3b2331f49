"""Loading a config file: TOML -> macros -> strict typing -> validation -> resolved Config.

Each stage reports into one problem list and the next stage still runs where it can, so the user
sees every problem of the file in one go. Only a TOML syntax error stops early: there is no
document to look at. A bad config never produces a traceback, only :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import tomli

from llama_swap_trio.config.macros import expand_macros
from llama_swap_trio.config.model import Config
from llama_swap_trio.config.parity_validate import type_parity
from llama_swap_trio.config.problems import ConfigError, KeyPath, Problems
from llama_swap_trio.config.schema import RawConfig, RawModel, RawRouting, structure
from llama_swap_trio.config.validate import Typed, build_config
from llama_swap_trio.config.yaml_hint import YAML_HINT, looks_like_yaml


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    pinned_ports: Mapping[str, int] | None = None,
) -> Config:
    """Read and resolve the config file at ``path``.

    Args:
        path: the TOML file; messages name it as given.
        environ: what ``${env.NAME}`` reads; the process environment by default.
        pinned_ports: model id -> the ``${PORT}`` it keeps (a reload); others skip these.

    Raises:
        ConfigError: the file cannot be read or is invalid; ``problems`` lists every problem.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read the file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not valid UTF-8 text ({exc.reason})"]) from None
    return load_config_text(text, name, environ, pinned_ports=pinned_ports)


def load_config_text(
    text: str,
    path: str = "config.toml",
    environ: Mapping[str, str] | None = None,
    *,
    pinned_ports: Mapping[str, int] | None = None,
) -> Config:
    """Resolve a config given as text; ``path`` is only used in messages and ``Config.path``.

    Raises:
        ConfigError: the text is invalid; ``problems`` lists every problem.
    """
    try:
        doc = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: " if exc.lineno else ""
        lines = [f"{path}: {where}{exc.msg}"]
        if looks_like_yaml(text, path):
            lines.append(f"{path}: {YAML_HINT.format(path=path)}")
        raise ConfigError(lines) from None

    macro_problems = Problems()
    expanded = expand_macros(
        doc, os.environ if environ is None else environ, macro_problems, pinned_ports
    )
    type_problems = Problems()
    typed = _structure(path, expanded.doc, expanded.ports, type_problems)
    problems = Problems()
    config = build_config(typed, problems)

    # A value whose macros failed is also of the wrong type, or an invalid URL, and so on; a
    # mistyped value left out of typing falls back to its default, which validation may then
    # question: report the cause, not its echoes.
    final = Problems()
    for stage, causes in (
        (macro_problems, set()),
        (type_problems, macro_problems.paths),
        (problems, macro_problems.paths | type_problems.paths),
    ):
        for key_path, message in stage.items():
            if any(key_path[: len(f)] == f for f in causes):
                continue
            if message.startswith("is missing") and any(
                f[: len(key_path)] == key_path for f in type_problems.paths
            ):
                continue  # the table is there; a value in it is mistyped (reported already)
            final.add(key_path, message)
    if final:
        raise ConfigError(final.lines(path))
    assert config is not None  # no problem was reported, so the build completed
    return config


def _structure(
    path: str, doc: dict[str, Any], ports: Mapping[str, int], problems: Problems
) -> Typed:
    """Type the document in pieces (top level, routing, each model) to report each piece."""

    def report(prefix: KeyPath, found: list[tuple[KeyPath, str]]) -> None:
        for key_path, message in found:
            problems.add((*prefix, *key_path), message)

    top, found = structure(doc, RawConfig)
    report((), found)

    models: dict[str, RawModel | None] = {}
    raw_models = doc.get("models", {})
    if isinstance(raw_models, dict):
        for model_id, table in raw_models.items():
            models[model_id], found = structure(table, RawModel)
            report(("models", model_id), found)
    routing: RawRouting | None = RawRouting()
    if "routing" in doc:
        if isinstance(doc["routing"], dict):
            routing, found = structure(doc["routing"], RawRouting)
            report(("routing",), found)
        else:
            routing = None  # reported as part of the top level

    parity = type_parity(doc, problems)
    return Typed(path, top, models, routing, ports, parity)
