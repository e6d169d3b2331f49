"""``check`` says everything at once (SPEC 6.4): no phases, warnings for programs not found,
unclosed macros, did-you-mean within two edits, a hint for llama-swap YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_swap_trio.config import ConfigError, load_config_text
from llama_swap_trio.config.problems import edit_distance, unknown_key_message
from tests.test_cli import run_cli


def problems_of(text: str, path: str = "config.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, path)
    return info.value.problems


def test_a_mistyped_value_in_the_matrix_table_is_reported_alone_with_the_other_problems() -> None:
    found = problems_of(
        '[models.a]\ncmd = "srv --port ${PORT}"\ntll = 5\n'
        '[routing]\nrouter = "matrix"\n[routing.matrix]\nvars = { a = 1 }\nsets = { s = "a" }\n'
    )
    assert found == [
        "config.toml: models.a.tll: unknown key (did you mean 'ttl'?)",
        "config.toml: routing.matrix.vars.a: expected str, got int 1",
    ]


def test_an_unclosed_macro_is_an_error_naming_the_key() -> None:
    found = problems_of('[models.a]\ncmd = "srv --port ${PORT} --id ${MODEL_ID"\n')
    assert found == [
        "config.toml: models.a.cmd: unclosed '${' (no '}' after '${MODEL_ID')",
    ]


@pytest.mark.parametrize(
    ("key", "hint"),
    [("tll", "ttl"), ("unlod_timeout", "unload_timeout"), ("chek_endpont", "check_endpoint")],
)
def test_unknown_keys_within_two_edits_get_a_did_you_mean(key: str, hint: str) -> None:
    found = problems_of(f'[models.a]\ncmd = "srv"\ncheck_endpoint = "none"\n{key} = 1\n')
    assert f"config.toml: models.a.{key}: unknown key (did you mean '{hint}'?)" in found


def test_edit_distance_counts_a_swap_of_neighbours_as_one_edit() -> None:
    assert edit_distance("tll", "ttl") == 1
    assert edit_distance("ttl", "ttl") == 0
    assert edit_distance("abc", "xyz") == 3
    assert unknown_key_message("zzzzzz", ["ttl", "cmd"]) == "unknown key"


def test_check_warns_about_a_program_not_on_path_and_still_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[models.a]\ncmd = "no-such-program-xyz --port ${PORT}"\n')
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert (
        f"{config}: models.a.cmd: warning: program 'no-such-program-xyz' is not found on PATH"
        in result.stdout
    )


def test_check_recognises_a_llama_swap_yaml_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  qwen:\n    cmd: llama-server --port ${PORT}\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert (
        "this looks like a llama-swap YAML file; convert it with "
        f"`llama-swap-trio import-yaml {config}`"
    ) in result.stderr
