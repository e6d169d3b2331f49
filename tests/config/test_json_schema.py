"""``llama-swap-trio schema``: the JSON Schema agrees with the loader it is generated from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap_trio.cli import main
from llama_swap_trio.config.import_yaml import import_yaml_file
from llama_swap_trio.config.json_schema import config_schema
from llama_swap_trio.config.load import _structure
from llama_swap_trio.config.problems import Problems

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = sorted((ROOT / "config").glob("*.toml"))


def validator() -> Any:
    """Draft-07, with TOML's integers: an int, never a float such as 3.0 (as Taplo has it)."""
    base = jsonschema.Draft7Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)(config_schema())


VALIDATOR = validator()


def schema_accepts(doc: dict[str, Any]) -> bool:
    return VALIDATOR.is_valid(doc)


def typing_accepts(doc: dict[str, Any]) -> bool:
    """The loader's typing stage (strict types, unknown keys) finds no problem in ``doc``."""
    problems = Problems()
    _structure("t.toml", doc, {}, problems)
    return not problems


def test_the_schema_is_valid_draft_07() -> None:
    jsonschema.Draft7Validator.check_schema(config_schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_validates(path: Path) -> None:
    doc = tomli.loads(path.read_text())
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    assert errors == []


def test_the_imported_llama_swap_example_validates() -> None:
    example = ROOT / "tests" / "data" / "llama-swap" / "config.example.yaml"
    doc = tomli.loads(import_yaml_file(str(example)))
    assert [e.message for e in VALIDATOR.iter_errors(doc)] == []


def test_the_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()


def test_unknown_keys_and_wrong_types_are_schema_errors() -> None:
    assert not schema_accepts({"tll": 3})
    assert not schema_accepts({"models": {"m": {"cmd": "x", "ttl": "300"}}})
    assert not schema_accepts({"models": {"m": {"ttl": 3}}})  # cmd is required
    assert not schema_accepts({"log_level": "loud"})  # editors offer the valid ones
    assert not schema_accepts({"peers": {"p": {"proxy": "http://x"}}})  # models required
    model = {"cmd": "x", "env": ["A=1"], "timeouts": {"connect": 1}}
    assert schema_accepts({"models": {"m": model}})


# -- random documents: the schema and the loader's typing stage agree ------------------------

VALUES = st.one_of(
    st.integers(-3, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(alphabet="ab =,", max_size=4),
    st.lists(st.text(alphabet="a=", max_size=3), max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.text(alphabet="ab", max_size=2), max_size=2),
)


def table(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Random subsets of ``fields``, plus sometimes an unknown key."""
    keys = st.lists(st.sampled_from([*fields, "bogus"]), unique=True, max_size=5)
    return keys.flatmap(
        lambda chosen: st.fixed_dictionaries(
            {k: fields.get(k, VALUES) for k in chosen}  # "bogus" gets any value
        )
    )


def values_or(*good: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(good), VALUES)


def enum_or_wrong_type(*good: str) -> st.SearchStrategy[Any]:
    """An enum key's value: a valid one or not a string at all. (A string outside the set is a
    schema error and a validation error, one stage after typing: not what this test compares.)"""
    return st.one_of(st.sampled_from(good), VALUES.filter(lambda v: not isinstance(v, str)))


TIMEOUTS = table({"connect": VALUES, "response_header": VALUES})
FILTERS = table({"strip_params": VALUES, "set_params": VALUES, "set_params_by_id": VALUES})
MODEL = table(
    {
        "cmd": values_or("srv --port ${PORT}"),
        "ttl": VALUES,
        "aliases": VALUES,
        "env": VALUES,
        "unlisted": VALUES,
        "proxy": VALUES,
        "metadata": VALUES,
        "send_loading_state": VALUES,
        "timeouts": st.one_of(TIMEOUTS, VALUES),
        "filters": st.one_of(FILTERS, VALUES),
    }
)
PEER = table(
    {
        "proxy": values_or("http://127.0.0.1:9"),
        "models": VALUES,
        "api_key": VALUES,
        "timeouts": st.one_of(TIMEOUTS, VALUES),
    }
)
SELECTOR = table(
    {"strategy": enum_or_wrong_type("warm", "pin"), "targets": VALUES, "spillover": VALUES}
)
DOCS = table(
    {
        "health_check_timeout": VALUES,
        "log_level": enum_or_wrong_type("debug", "info"),
        "api_keys": VALUES,
        "macros": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
        "upstream": st.one_of(table({"ignore_paths": VALUES}), VALUES),
        "hooks": st.one_of(table({"on_startup": table({"preload": VALUES})}), VALUES),
        "models": st.dictionaries(st.sampled_from(["m", "n"]), MODEL, max_size=2),
        "routing": st.one_of(
            table({"router": enum_or_wrong_type("group"), "priority": VALUES}), VALUES
        ),
        "peers": st.dictionaries(st.sampled_from(["p"]), PEER, max_size=1),
        "selectors": st.dictionaries(st.sampled_from(["s"]), SELECTOR, max_size=1),
        "profiles": st.dictionaries(st.sampled_from(["q"]), table({"pins": VALUES}), max_size=1),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS)
def test_random_documents_accepted_by_one_are_accepted_by_the_other(doc: dict[str, Any]) -> None:
    assert schema_accepts(doc) == typing_accepts(doc), doc
