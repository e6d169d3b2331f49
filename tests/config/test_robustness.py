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


# -- wider fuzzing (reliability issue): raw text, and every key of the schema at its own depth ----

TOML_PIECES = st.sampled_from(
    ['[models.m]\n', 'cmd = "srv --port ${PORT}"\n', "[routing]\n", '[routing.groups.g]\n',
     'members = ["m"]\n', "[routing.matrix]\n", 'sets = { s = "m & (" }\n', "ttl = -5\n",
     '[models."a/b:c"]\n', "[[models]]\n", "x = [1, \"a\"]\n", "= 1\n", '"\\u0000" = 1\n',
     "start_port = 70000\n", "[macros]\n", 'p = "${p}"\n', "api_keys = [\"\", \"a b\"]\n",
     "[hooks.on_startup]\n", 'preload = ["zz"]\n', "[upstream]\n", 'ignore_paths = ["("]\n',
     'proxy = "http://[::1"\n', "timeouts = { connect = -1.0, response_header = nan }\n"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(TOML_PIECES, st.text(max_size=20)), max_size=12))
def test_any_text_gives_config_or_config_error(pieces: list[str]) -> None:
    problems: list[str] = ["(loaded)"]
    try:
        load_config_text("".join(pieces), environ={})
    except ConfigError as exc:
        problems = exc.problems
    assert problems
    assert all(isinstance(line, str) and line for line in problems)


MODEL_KEYS = {
    "cmd": st.sampled_from(["srv --port ${PORT}", "", "a 'b", "#x\nsrv \\\n ${PORT}", "${nope}"]),
    "cmd_stop": st.sampled_from(["kill ${PID}", "${PID", ""]),
    "proxy": st.sampled_from(["http://127.0.0.1:${PORT}", "ftp://x", "http://", "x", ""]),
    "check_endpoint": st.sampled_from(["/health", "none", "", "health"]),
    "ttl": st.integers(-3, 10**12),
    "unload_timeout": st.integers(-3, 10**6),
    "aliases": st.lists(st.sampled_from(["m", "x", "x", "", "a/b"]), max_size=3),
    "env": st.one_of(
        st.dictionaries(st.sampled_from(["A", "", "B=C"]), st.text(max_size=3), max_size=2),
        st.lists(st.sampled_from(["A=1", "B", "=x"]), max_size=2),
    ),
    "use_model_name": st.text(max_size=4),
    "unlisted": st.booleans(),
    "concurrency_limit": st.integers(-2, 5),
    "send_loading_state": st.booleans(),
    "metadata": st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
    "filters": st.fixed_dictionaries(
        {},
        optional={
            "strip_params": st.one_of(st.text(max_size=6), st.lists(st.text(max_size=4))),
            "set_params": st.dictionaries(st.sampled_from(["model", "t", "x"]), SCALARS),
            "set_params_by_id": st.dictionaries(
                st.sampled_from(["m", "n", "${MODEL_ID}"]), st.dictionaries(KEYS, SCALARS)
            ),
        },
    ),
    "timeouts": st.dictionaries(
        st.sampled_from(["connect", "response_header", "read"]),
        st.one_of(st.floats(allow_nan=True), st.integers(-1, 5)),
    ),
    "macros": st.dictionaries(st.sampled_from(["a", "PORT", "b-c", "bad name"]), SCALARS),
}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["m", "n", "a/b"]),
        st.fixed_dictionaries({}, optional=MODEL_KEYS),  # type: ignore[arg-type]
        max_size=3,
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "routing": st.fixed_dictionaries(
                {},
                optional={
                    "router": st.sampled_from(["group", "matrix", "x"]),
                    "groups": st.dictionaries(
                        st.sampled_from(["g", "h"]),
                        st.fixed_dictionaries(
                            {"members": st.lists(st.sampled_from(["m", "n", "zz"]), max_size=3)},
                            optional={"swap": st.booleans(), "persistent": SCALARS},
                        ),
                        max_size=2,
                    ),
                    "matrix": st.fixed_dictionaries(
                        {},
                        optional={
                            "vars": st.dictionaries(st.sampled_from(["v", "w"]), SCALARS),
                            "sets": st.dictionaries(
                                st.sampled_from(["s", "t"]),
                                st.sampled_from(["m & n", "(m | +t)", "v &", "+s", "m|n&v"]),
                            ),
                            "evict_costs": st.dictionaries(st.sampled_from(["m", "v"]), SCALARS),
                        },
                    ),
                    "priority": st.dictionaries(st.sampled_from(["m", "zz"]), SCALARS),
                },
            ),
            "hooks": st.just({"on_startup": {"preload": ["m", "zz"]}}),
            "global_ttl": SCALARS,
            "include_aliases_in_list": SCALARS,
            "log_to_stdout": st.sampled_from(["proxy", "all"]),
        },
    ),
)
def test_any_schema_shaped_document_gives_config_or_config_error(
    models: dict[str, Any], top: dict[str, Any]
) -> None:
    problems: list[str] = ["(loaded)"]
    try:
        load_config_text(to_toml({**top, "models": models}), environ={})
    except ConfigError as exc:
        problems = exc.problems
    assert problems
    assert all(line.startswith(("config.toml: ", "(loaded)")) for line in problems)
