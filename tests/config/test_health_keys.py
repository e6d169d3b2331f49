"""``health_interval`` and ``health_failures`` (SPEC 6.4): defaults, overrides, strict checks."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, load_config_text

MODEL = '[models.a]\ncmd = "srv --port ${PORT}"\n'


def test_defaults_and_a_per_model_override() -> None:
    config = load_config_text(
        "health_interval = 2.5\n" + MODEL + '[models.b]\ncmd = "srv --port ${PORT}"\n'
        "health_interval = 0\nhealth_failures = 5\n"
    )
    assert (config.models["a"].health_interval, config.models["a"].health_failures) == (2.5, 3)
    assert (config.models["b"].health_interval, config.models["b"].health_failures) == (0.0, 5)
    plain = load_config_text(MODEL)
    assert (plain.models["a"].health_interval, plain.models["a"].health_failures) == (10.0, 3)


def test_bad_values_are_all_reported_with_their_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(
            "health_interval = -1\nhealth_failures = 0\n"
            + MODEL
            + 'health_interval = "10"\nhealth_failures = 1.5\n'
        )
    text = "\n".join(info.value.problems)
    assert "config.toml: health_interval: must be >= 0" in text
    assert "config.toml: health_failures: must be >= 1, got 0" in text
    assert "models.a.health_interval: expected float" in text
    assert "models.a.health_failures: expected int" in text
