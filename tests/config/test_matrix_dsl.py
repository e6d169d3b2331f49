"""The matrix set DSL: precedence, references, vars, expansion and solver order."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, load_config_text
from llama_swap_trio.config.matrix_dsl import DSLError, parse_dsl
from llama_swap_trio.config.model import MatrixConfig

MODELS = "".join(f'[models.{m}]\ncmd = "srv ${{PORT}}"\n' for m in ("a", "b", "c", "d"))


def matrix(body: str) -> MatrixConfig:
    config = load_config_text(
        MODELS + '[routing]\nrouter = "matrix"\n[routing.matrix]\n' + body, environ={}
    )
    assert config.routing.router == "matrix"
    assert config.routing.matrix is not None
    return config.routing.matrix


def alternatives(m: MatrixConfig) -> list[tuple[str, set[str]]]:
    return [(s.name, set(s.models)) for s in m.sets]


@pytest.mark.parametrize(
    ("dsl", "expected"),
    [
        ("a", [{"a"}]),
        ("a & b", [{"a", "b"}]),
        ("a | b", [{"a"}, {"b"}]),
        ("a | b & c", [{"a"}, {"b", "c"}]),  # & binds tighter
        ("(a | b) & c", [{"a", "c"}, {"b", "c"}]),
        ("(a | b) & (c | d)", [{"a", "c"}, {"a", "d"}, {"b", "c"}, {"b", "d"}]),
        ("a | a", [{"a"}]),
        ("a&b|c", [{"a", "b"}, {"c"}]),
    ],
)
def test_expressions_expand_to_alternatives(dsl: str, expected: list[set[str]]) -> None:
    result = matrix(f'sets = {{s = "{dsl}"}}')
    assert [models for _, models in alternatives(result)] == expected


def test_vars_win_over_same_named_model_ids_and_name_odd_ids() -> None:
    config = load_config_text(
        MODELS
        + '[models."org/x:q4"]\ncmd = "srv ${PORT}"\n'
        + '[routing.matrix]\nvars = {x = "org/x:q4", a = "b"}\nsets = {s = "x & a"}\n',
        environ={},
    )
    assert config.routing.matrix is not None
    assert alternatives(config.routing.matrix) == [("s", {"org/x:q4", "b"})]
    assert config.routing.router == "group"  # a matrix may be present while groups route


def test_referenced_sets_come_first_then_declaration_order() -> None:
    result = matrix(
        'sets = {first = "a & +shared", solo = "d", shared = "b | c", last = "+solo & a"}'
    )
    assert alternatives(result) == [
        ("shared", {"b"}),
        ("shared", {"c"}),
        ("first", {"a", "b"}),
        ("first", {"a", "c"}),
        ("solo", {"d"}),
        ("last", {"a", "d"}),
    ]
    assert result.sets[0].dsl == "b | c"


def test_evict_costs_default_to_one_and_accept_vars() -> None:
    result = matrix('vars = {big = "d"}\nevict_costs = {big = 50, b = 3}\nsets = {s = "a & b"}')
    assert result.evict_costs == {"a": 1, "b": 3, "c": 1, "d": 50}


def test_all_dsl_problems_of_all_sets_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        matrix('sets = {x = "a &", y = "zz", z = "+nope"}')
    assert caught.value.problems == [
        "config.toml: routing.matrix.sets.x: expression ends where a name, '(' or '+set' was "
        "expected",
        "config.toml: routing.matrix.sets.y: unknown var or model 'zz'",
        "config.toml: routing.matrix.sets.z: references undefined set 'nope'",
    ]


def test_self_reference_is_a_cycle() -> None:
    with pytest.raises(ConfigError) as caught:
        matrix('sets = {s = "a | +s"}')
    assert caught.value.problems == [
        "config.toml: routing.matrix.sets.s: circular reference: s -> s"
    ]


def test_an_exploding_expression_is_refused() -> None:
    # 14 independent choices of two: 16384 alternatives
    many = " & ".join(f"(x{i} | y{i})" for i in range(14))
    models = "".join(f'[models.{p}{i}]\ncmd = "srv ${{PORT}}"\n' for i in range(14) for p in "xy")
    with pytest.raises(ConfigError) as caught:
        load_config_text(MODELS + models + f'[routing.matrix]\nsets = {{s = "{many}"}}', environ={})
    assert caught.value.problems == [
        "config.toml: routing.matrix.sets.s: expands to more than 10000 alternatives"
    ]


@pytest.mark.parametrize(
    ("dsl", "message"),
    [
        ("", "empty expression"),
        ("a b", "unexpected 'b' at column 3"),
        ("a | | b", "unexpected '|' at column 5; expected a name, '(' or '+set'"),
        ("a & + (b)", "'+' at column 5 must be followed by a set name"),
        ("(a", "missing ')' for the '(' at column 1"),
        ("a$", "unexpected character '$' at column 2"),
    ],
)
def test_parse_errors_say_what_and_where(dsl: str, message: str) -> None:
    with pytest.raises(DSLError, match=None) as caught:
        parse_dsl(dsl)
    assert str(caught.value) == message
