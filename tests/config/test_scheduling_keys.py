"""The scheduling keys of SPEC 6.5: defaults, strict types, ranges, key paths."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, load_config_text

M = '[models.m]\ncmd = "srv --port ${PORT}"\n'


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, environ={})
    return caught.value.problems


def test_defaults() -> None:
    model = load_config_text(M, environ={}).models["m"]
    assert model.protected is False


def test_protected_is_read() -> None:
    assert load_config_text(M + "protected = true", environ={}).models["m"].protected is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (M + 'protected = "true"', "models.m.protected: expected bool, got str 'true'"),
        (M + "protectd = true", "did you mean 'protected'"),
    ],
)
def test_bad_values_name_the_key(text: str, problem: str) -> None:
    problems = problems_of(text)
    assert any(problem in line for line in problems), problems
