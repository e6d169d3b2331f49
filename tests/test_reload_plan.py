"""What a reload does to each model: the launch definition decides, ports of kept models stay."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from llama_swap_trio.config import ConfigError, load_config_text
from llama_swap_trio.config.model import Config
from llama_swap_trio.reload_plan import ReloadPlan, plan_reload


def loader(text: str) -> object:
    def load(pinned: Mapping[str, int]) -> Config:
        return load_config_text(text, pinned_ports=pinned)

    return load


def plan(old_text: str, new_text: str) -> tuple[Config, ReloadPlan]:
    old = load_config_text(old_text)
    return plan_reload(old, loader(new_text))  # type: ignore[arg-type]


BASE = """start_port = 7000
[models.a]
cmd = "srv --port ${PORT} -m a"
[models.b]
cmd = "srv --port ${PORT} -m b"
[models.c]
cmd = "srv --port ${PORT} -m c"
"""


def test_settings_outside_the_launch_definition_keep_the_model() -> None:
    new = BASE.replace('-m b"', '-m b"\ndescription = "x"\nttl = 30\naliases = ["bee"]')
    config, outcome = plan(BASE, new)
    assert outcome == ReloadPlan(kept=("a", "b", "c"), restarted=(), added=(), removed=())
    assert config.models["b"].ttl == 30


@pytest.mark.parametrize(
    "edit",
    [
        ('-m b"', '-m b --ctx 4096"'),
        ('-m b"', '-m b"\ncmd_stop = "kill ${PID}"'),
        ('-m b"', '-m b"\ncheck_endpoint = "/ready"'),
        ('-m b"', '-m b"\nenv = { CUDA_VISIBLE_DEVICES = "1" }'),
        ('-m b"', '-m b"\nunload_timeout = 3'),
        ('-m b"', '-m b"\nproxy = "http://127.0.0.1:${PORT}/v"'),
    ],
    ids=["cmd", "cmd_stop", "check_endpoint", "env", "unload_timeout", "proxy"],
)
def test_a_changed_launch_definition_restarts_the_model(edit: tuple[str, str]) -> None:
    _, outcome = plan(BASE, BASE.replace(*edit))
    assert outcome.restarted == ("b",)
    assert outcome.kept == ("a", "c")


def test_kept_models_keep_their_ports_and_new_ones_skip_them() -> None:
    # given a removed, b changed, c kept, and a0 added (sorted before every other id)
    new = BASE.replace('[models.a]\ncmd = "srv --port ${PORT} -m a"\n', "").replace(
        '-m b"', '-m b --v2"'
    )
    new += '[models.a0]\ncmd = "srv --port ${PORT} -m a0"\n'
    config, outcome = plan(BASE, new)
    assert outcome == ReloadPlan(kept=("c",), restarted=("b",), added=("a0",), removed=("a",))
    # c keeps 7002; a0 and b are numbered from 7000 in id order, skipping 7002
    assert config.models["c"].port == 7002
    assert config.models["a0"].port == 7000
    assert config.models["b"].port == 7001
    assert config.models["c"].cmd == "srv --port 7002 -m c"


def test_a_kept_model_keeps_its_port_when_a_model_before_it_is_added() -> None:
    new = BASE + '[models.0first]\ncmd = "srv --port ${PORT} -m 0"\n'
    config, outcome = plan(BASE, new)
    assert outcome.kept == ("a", "b", "c")
    assert [config.models[m].port for m in ("a", "b", "c")] == [7000, 7001, 7002]
    assert config.models["0first"].port == 7003


def test_an_invalid_file_raises_with_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        plan(BASE, BASE + "tll = 1\nglobal_ttl = -1\n")
    assert len(info.value.problems) >= 1
