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
    config = load_config_text(M, environ={})
    model = config.models["m"]
    assert model.protected is False
    assert model.min_residency == 0.0
    assert model.queue_timeout == 0.0
    assert model.autoload is True
    assert model.websockets_hold_model is True
    assert config.routing.starvation_after == 30.0


def test_every_key_is_read() -> None:
    text = M + (
        "protected = true\nmin_residency = 2.5\nqueue_timeout = 7\nautoload = false\n"
        "websockets_hold_model = false\n[routing]\nstarvation_after = 0\n"
    )
    config = load_config_text(text, environ={})
    model = config.models["m"]
    assert (model.protected, model.min_residency, model.queue_timeout) == (True, 2.5, 7.0)
    assert (model.autoload, model.websockets_hold_model) == (False, False)
    assert config.routing.starvation_after == 0.0


def test_global_queue_timeout_and_autoload_apply_unless_the_model_sets_its_own() -> None:
    n = '[models.n]\ncmd = "srv --port ${PORT}"\nqueue_timeout = 0\nautoload = true\n'
    config = load_config_text("queue_timeout = 9.5\nautoload = false\n" + M + n, environ={})
    assert (config.models["m"].queue_timeout, config.models["m"].autoload) == (9.5, False)
    assert (config.models["n"].queue_timeout, config.models["n"].autoload) == (0.0, True)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (M + 'protected = "true"', "models.m.protected: expected bool, got str 'true'"),
        (M + "protectd = true", "did you mean 'protected'"),
        (M + "min_residency = -1", "models.m.min_residency: must be >= 0, got -1.0"),
        (M + 'min_residency = "5"', "models.m.min_residency: expected float, got str '5'"),
        (M + "queue_timeout = -0.5", "models.m.queue_timeout: must be >= 0, got -0.5"),
        ("queue_timeout = -2\n" + M, "queue_timeout: must be >= 0, got -2.0"),
        ('autoload = "no"\n' + M, "autoload: expected bool, got str 'no'"),
        (M + "autoload = 1", "models.m.autoload: expected bool, got int 1"),
        (M + "websockets_hold_model = 0", "models.m.websockets_hold_model: expected bool"),
        (M + "[routing]\nstarvation_after = -1", "routing.starvation_after: must be >= 0"),
        (M + "[routing]\nstarvation_afer = 1", "did you mean 'starvation_after'"),
    ],
)
def test_bad_values_name_the_key(text: str, problem: str) -> None:
    problems = problems_of(text)
    assert any(problem in line for line in problems), problems


def test_every_problem_at_once() -> None:
    text = "queue_timeout = -1\n" + M + "min_residency = -1\nautoload = 3\n"
    assert len(problems_of(text)) == 3
