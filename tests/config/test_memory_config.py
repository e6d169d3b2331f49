"""``[resources] gpu_memory`` and ``models.<id>.memory`` (SPEC 6.7): sizes, checks, ``check``."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, describe_config, load_config_text
from llama_swap_trio.config.memory import format_size, parse_size
from llama_swap_trio.upstream import nvml

M = '[models.m]\ncmd = "srv --port ${PORT}"\n'
GiB = 1024**3


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, environ={})
    return caught.value.problems


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("24GiB", 24 * GiB),
        ("512MiB", 512 * 1024**2),
        ("8GB", 8 * 1000**3),
        ("1.5 GiB", int(1.5 * GiB)),
        ("4096", 4096),
        (4096, 4096),
        ("2tib", 2 * 1024**4),
    ],
)
def test_sizes_are_ints_or_strings_with_a_unit(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["24 gigs", "GiB", "-1GiB", "", "1e9"])
def test_a_string_that_is_no_size_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(value)


def test_format_size_is_short() -> None:
    assert format_size(24 * GiB) == "24.0GiB"
    assert format_size(512 * 1024**2) == "512.0MiB"
    assert format_size(12) == "12B"


def test_budget_and_sizes_resolve_to_bytes() -> None:
    config = load_config_text(
        '[resources]\ngpu_memory = "24GiB"\n' + M + 'memory = "8GiB"\n', environ={}
    )
    assert config.gpu_memory == 24 * GiB
    assert config.models["m"].memory == 8 * GiB


def test_without_resources_there_is_no_budget() -> None:
    config = load_config_text(M, environ={})
    assert config.gpu_memory is None
    assert config.models["m"].memory is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[resources]\ngpu_memory = "lots"\n' + M,
            "resources.gpu_memory: not a size: 'lots'",
        ),
        ("[resources]\ngpu_memory = true\n" + M, "resources.gpu_memory: expected a size"),
        ("[resources]\ngpu_memory = 0\n" + M, "resources.gpu_memory: must be > 0"),
        ("[resources]\ngpu_mem = 1\n" + M, "resources.gpu_mem: unknown key (did you mean"),
        (M + "memory = -5", "models.m.memory: must be a size >= 0, got -5"),
        (M + 'memory = "8 bananas"', "models.m.memory: not a size: '8 bananas'"),
        (M + "memory = [1]", "models.m.memory: expected a size"),
        (M + "memry = 1", "models.m.memry: unknown key (did you mean 'memory'?)"),
        (
            '[resources]\ngpu_memory = "8GiB"\n' + M + 'memory = "9GiB"',
            "models.m.memory: 9.0GiB is more than resources.gpu_memory (8.0GiB): "
            "this model could never run",
        ),
    ],
)
def test_bad_memory_keys_name_their_key_path(text: str, problem: str) -> None:
    found = problems_of(text)
    assert any(problem in line for line in found), found


def test_every_memory_problem_is_reported_at_once() -> None:
    text = (
        '[resources]\ngpu_memory = "8GiB"\n'
        + M
        + 'memory = "9GiB"\n[models.n]\ncmd = "srv --port ${PORT}"\nmemory = "x"\n'
    )
    found = problems_of(text)
    assert len(found) == 2, found


def test_measured_without_nvml_is_a_config_error_that_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nvml, "unavailable_reason", lambda: "NVML init failed: Driver Not Loaded")
    [problem] = problems_of(M + 'memory = "measured"')
    assert "models.m.memory: 'measured' needs NVML" in problem
    assert "NVML init failed: Driver Not Loaded" in problem


def test_measured_with_nvml_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "unavailable_reason", lambda: None)
    config = load_config_text(
        '[resources]\ngpu_memory = "8GiB"\n' + M + 'memory = "measured"', environ={}
    )
    assert config.models["m"].memory == "measured"


def test_measured_here_quotes_the_real_nvml_error() -> None:
    """This machine's own answer: without a driver, the library's init error is quoted."""
    reason = nvml.unavailable_reason()
    if reason is None:
        pytest.skip("this machine has a working NVIDIA driver")
    [problem] = problems_of(M + 'memory = "measured"')
    assert reason in problem


def test_check_lists_sizes_and_the_budget() -> None:
    text = '[resources]\ngpu_memory = "24GiB"\n' + M + 'memory = "8GiB"\n'
    text += '[models.n]\ncmd = "srv --port ${PORT}"\n'
    lines = describe_config(load_config_text(text, environ={}))
    assert "memory=8.0GiB (fits)" in lines[0]
    assert "memory=- (fits)" in lines[1]
    assert lines[2].startswith("resources: gpu_memory=24.0GiB (25769803776 bytes)")


def test_sleep_endpoints_and_sleep_memory_resolve() -> None:
    config = load_config_text(
        M
        + 'memory = "8GiB"\nsleep_memory = "1GiB"\n'
        + 'sleep = { sleep = "POST /sleep?level=1", wake = "post /wake_up" }\n',
        environ={},
    )
    model = config.models["m"]
    assert model.sleep is not None
    assert str(model.sleep.sleep) == "POST /sleep?level=1"
    assert str(model.sleep.wake) == "POST /wake_up"
    assert model.sleep_memory == GiB


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            M + 'sleep = { sleep = "/sleep", wake = "POST /wake_up" }',
            "models.m.sleep.sleep: must be 'METHOD /path'",
        ),
        (
            M + 'sleep = { sleep = "POST /sleep", wake = "FETCH /wake_up" }',
            "models.m.sleep.wake: must be 'METHOD /path'",
        ),
        (M + 'sleep = { sleep = "POST /sleep" }', "models.m.sleep.wake: required key is missing"),
        (
            M + 'sleep = { sleep = "POST /s", wake = "POST /w", wak = 1 }',
            "models.m.sleep.wak: unknown key",
        ),
        (M + 'sleep = "POST /sleep"', "models.m.sleep: expected a table"),
        (M + 'sleep_memory = "x"', "models.m.sleep_memory: not a size: 'x'"),
        (
            M + 'memory = "1GiB"\nsleep_memory = "2GiB"',
            "models.m.sleep_memory: 2.0GiB is more than the model's memory (1.0GiB)",
        ),
    ],
)
def test_bad_sleep_keys_name_their_key_path(text: str, problem: str) -> None:
    found = problems_of(text)
    assert any(problem in line for line in found), found
