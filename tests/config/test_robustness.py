"""Any TOML document loads to a Config or fails with ConfigError, never another exception."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llama_swap_trio.config import ConfigError, load_config_text

KEYS = st.sampled_from(
    [
        "cmd", "ttl", "proxy", "aliases", "env", "macros", "metadata", "filters", "timeouts",
        "strip_params", "set_params_by_id", "models", "routing", "groups", "members", "matrix",
        "sets", "vars", "evict_costs", "priority", "start_port", "m", "n", "a", "PORT",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.integers(-3, 70000),
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(["", "a", "m", "${PORT}", "${a}", "${MODEL_ID}", "${env.X}", "a | +s", "(m"]),
    st.text(max_size=8),
)
VALUES: Any = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


def to_toml(doc: dict[str, Any]) -> str:
    """A tiny TOML writer: one inline table per top-level key is enough for this test."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return (
                "nan"
                if v != v
                else ("inf" if v == float("inf") else "-inf" if v == -float("inf") else repr(v))
            )
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return '"' + v.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"

    return "\n".join(f'"{k}" = {value(v)}' for k, v in doc.items())


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_any_document_gives_config_or_config_error(doc: dict[str, Any]) -> None:
    problems: list[str] = ["(loaded)"]
    try:
        load_config_text(to_toml(doc), environ={"X": "1"})
    except ConfigError as exc:
        problems = exc.problems
    assert problems
    assert all(line.startswith(("config.toml: ", "(loaded)")) for line in problems)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4), st.dictionaries(KEYS, VALUES, max_size=4))
def test_any_model_table_gives_config_or_config_error(
    model: dict[str, Any], top: dict[str, Any]
) -> None:
    doc = {**top, "models": {"m": {"cmd": "srv ${PORT}", **model}}}
    problems: list[str] = ["(loaded)"]
    try:
        load_config_text(to_toml(doc), environ={})
    except ConfigError as exc:
        problems = exc.problems
    assert problems
