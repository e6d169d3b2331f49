"""Valid configurations resolve to the expected Config: macros, ports, commands, defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_swap_trio.config import ConfigError, describe_config, load_config, load_config_text
from llama_swap_trio.config.model import DEFAULT_GROUP, DEFAULT_IGNORE_PATHS, Config


def load(text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config_text(text, environ={} if environ is None else environ)


# -- macros ----------------------------------------------------------------------------------


def test_global_and_model_macros_are_substituted_in_cmd() -> None:
    config = load(
        """
        [macros]
        server = "llama-server --port ${PORT}"
        ctx = 4096
        [models.qwen]
        cmd = "${server} -c ${ctx} -m /m/${MODEL_ID}.gguf"
        [models.qwen.macros]
        gpu = "-ngl 99"
        """
    )
    assert config.models["qwen"].argv == (
        "llama-server", "--port", "5800", "-c", "4096", "-m", "/m/qwen.gguf",
    )  # fmt: skip


def test_model_macro_overrides_global_even_inside_other_global_macros() -> None:
    # given a global macro built from another one, which a model overrides
    config = load(
        """
        [macros]
        ctx = 4096
        args = "-c ${ctx}"
        [models.a]
        cmd = "srv --port ${PORT} ${args}"
        macros.ctx = 8192
        [models.b]
        cmd = "srv --port ${PORT} ${args}"
        """
    )
    # then the model's value is used where the global macro refers to it
    assert config.models["a"].argv[-2:] == ("-c", "8192")
    assert config.models["b"].argv[-2:] == ("-c", "4096")


@pytest.mark.parametrize(
    ("macro", "value", "expected"),
    [
        ("60", '"${t}"', 60),
        ("true", '"${t}"', True),
        ("0.5", '"${t}"', 0.5),
        ('"x"', '"${t}"', "x"),
        ("60", '"ttl=${t}"', "ttl=60"),
        ("true", '"on=${t}"', "on=true"),
        ("false", '"on=${t}"', "on=false"),
        ("0.5", '"p=${t}"', "p=0.5"),
    ],
)
def test_a_whole_value_macro_keeps_its_type_and_an_embedded_one_is_stringified(
    macro: str, value: str, expected: object
) -> None:
    config = load(f'[macros]\nt = {macro}\n[models.m]\ncmd = "srv ${{PORT}}"\nmetadata.v = {value}')
    assert config.models["m"].metadata["v"] == expected
    assert type(config.models["m"].metadata["v"]) is type(expected)


def test_typed_macros_fill_typed_keys() -> None:
    config = load(
        """
        start_port = "${sp}"
        global_ttl = "${t}"
        [macros]
        t = 60
        sp = 9000
        [models.m]
        cmd = "srv --port ${PORT}"
        ttl = "${t}"
        unlisted = "${yes}"
        timeouts.connect = "${t}"
        macros.yes = true
        """
    )
    model = config.models["m"]
    assert (config.start_port, config.global_ttl, model.ttl, model.unlisted) == (9000, 60, 60, True)
    assert model.timeouts.connect == 60.0
    assert model.port == 9000


def test_env_and_model_id_and_port_reach_nested_metadata_with_types() -> None:
    config = load(
        """
        [models."org/m:q4"]
        cmd = "srv --port ${PORT} --home ${env.HOME_DIR}"
        metadata = {port = "${PORT}", tags = ["${MODEL_ID}", {home = "${env.HOME_DIR}"}]}
        """,
        environ={"HOME_DIR": "/home/x"},
    )
    model = config.models["org/m:q4"]
    assert model.argv == ("srv", "--port", "5800", "--home", "/home/x")
    assert model.metadata == {"port": 5800, "tags": ["org/m:q4", {"home": "/home/x"}]}


def test_a_global_macro_may_hold_model_id_and_port() -> None:
    config = load(
        """
        [macros]
        base = "srv --port ${PORT} --alias ${MODEL_ID}"
        [models.a]
        cmd = "${base}"
        [models.b]
        cmd = "${base}"
        """
    )
    assert config.models["a"].cmd == "srv --port 5800 --alias a"
    assert config.models["b"].cmd == "srv --port 5801 --alias b"


def test_pid_stays_in_cmd_stop_until_stop_time() -> None:
    config = load(
        """
        [macros]
        killer = "kill -TERM ${PID}"
        [models.m]
        cmd = "srv --port ${PORT}"
        cmd_stop = '''
        # stop politely
        ${killer}
        '''
        """
    )
    model = config.models["m"]
    assert model.cmd_stop == "kill -TERM ${PID}"
    assert model.stop_argv(4242) == ["kill", "-TERM", "4242"]


def test_macros_are_not_substituted_in_table_keys_except_set_params_by_id() -> None:
    config = load(
        """
        [macros]
        k = "fast"
        [models.m]
        cmd = "srv --port ${PORT}"
        metadata = {"${k}" = "${k}"}
        filters.set_params_by_id = {"m-${k}" = {temperature = 0.1}}
        """
    )
    model = config.models["m"]
    assert model.metadata == {"${k}": "fast"}
    assert model.filters.set_params_by_id == {"m-fast": {"temperature": 0.1}}
    assert config.aliases == {"m-fast": "m"}


# -- ports -----------------------------------------------------------------------------------


def test_ports_go_to_models_using_port_in_sorted_id_order() -> None:
    config = load(
        """
        start_port = 6000
        [macros]
        p = "--port ${PORT}"
        [models.zeta]
        cmd = "srv --port ${PORT}"
        [models.alpha]
        cmd = "srv ${p}"
        [models.fixed]
        cmd = "srv --port 7000"
        proxy = "http://127.0.0.1:7000"
        [models.mid]
        cmd = '''
        srv \\
          # --port ${PORT} is only in a comment line here
          --port 7001
        '''
        proxy = "http://127.0.0.1:7001/"
        """
    )
    ports = {model_id: model.port for model_id, model in config.models.items()}
    assert ports == {"zeta": 6001, "alpha": 6000, "fixed": None, "mid": None}
    assert config.models["zeta"].proxy == "http://127.0.0.1:6001"
    assert config.models["mid"].proxy == "http://127.0.0.1:7001"
    assert config.models["mid"].argv == ("srv", "--port", "7001")


# -- commands --------------------------------------------------------------------------------


def test_cmd_drops_comment_lines_joins_continuations_and_respects_quotes() -> None:
    # given a TOML literal string: in a basic """ string TOML itself would eat the backslashes
    config = load(
        r"""
        [models.m]
        cmd = '''
        llama-server \
          # --disabled-flag \
          --port ${PORT} \
          --prompt "hello   world" --x 'a b' \
          --hash #notacomment
        '''
        """
    )
    model = config.models["m"]
    assert model.argv == (
        "llama-server", "--port", "5800", "--prompt", "hello   world", "--x", "a b",
        "--hash", "#notacomment",
    )  # fmt: skip
    assert model.cmd == (
        "llama-server --port 5800 --prompt 'hello   world' --x 'a b' --hash '#notacomment'"
    )


def test_toml_basic_string_continuations_also_give_one_command() -> None:
    config = load('[models.m]\ncmd = """\nsrv \\\n  --port ${PORT} \\\n  -v\n"""\n')
    assert config.models["m"].argv == ("srv", "--port", "5800", "-v")


def test_tabs_and_newlines_are_the_control_characters_a_cmd_may_hold() -> None:
    config = load('[models.m]\ncmd = "srv\\t--port ${PORT}\\n  -v"\ncmd_stop = "kill\\t${PID}"\n')
    assert config.models["m"].argv == ("srv", "--port", "5800", "-v")


# -- defaults --------------------------------------------------------------------------------


def test_defaults_are_resolved() -> None:
    config = load(
        """
        global_ttl = 300
        send_loading_state = true
        [models.a]
        cmd = "srv --port ${PORT}"
        [models.b]
        cmd = "srv --port ${PORT}"
        ttl = 0
        unload_timeout = 3
        send_loading_state = false
        """
    )
    a, b = config.models["a"], config.models["b"]
    assert (config.health_check_timeout, config.log_level, config.log_to_stdout) == (
        120, "info", "proxy",
    )  # fmt: skip
    assert config.unload_timeout == 10
    assert (a.ttl, a.unload_timeout, a.send_loading_state) == (300, 10, True)
    assert (b.ttl, b.unload_timeout, b.send_loading_state) == (0, 3, False)
    assert a.check_endpoint == "/health"
    assert a.proxy == "http://127.0.0.1:5800"
    assert a.timeouts.connect == 30.0
    assert a.timeouts.response_header == 0.0
    assert [p.pattern for p in config.ignore_paths] == list(DEFAULT_IGNORE_PATHS)
    assert config.preload == ()
    assert config.api_keys == ()


def test_global_unload_timeout_zero_means_ten_and_models_inherit_it() -> None:
    config = load('unload_timeout = 0\n[models.m]\ncmd = "srv ${PORT}"')
    assert config.unload_timeout == 10
    assert config.models["m"].unload_timeout == 10


def test_an_empty_config_is_valid() -> None:
    config = load("")
    assert config.models == {}
    assert config.routing.groups == {}


def test_env_filters_and_lists_in_both_spellings() -> None:
    config = load(
        """
        [models.a]
        cmd = "srv ${PORT}"
        env = ["A=1", "B=x=y"]
        filters.strip_params = " temperature, top_p ,,"
        [models.b]
        cmd = "srv ${PORT}"
        env = {C = "3"}
        filters.strip_params = ["top_k"]
        filters.set_params = {n = 2}
        """
    )
    assert config.models["a"].env == {"A": "1", "B": "x=y"}
    assert config.models["a"].filters.strip_params == ("temperature", "top_p")
    assert config.models["b"].env == {"C": "3"}
    assert config.models["b"].filters.strip_params == ("top_k",)
    assert config.models["b"].filters.set_params == {"n": 2}


def test_references_resolve_through_aliases() -> None:
    config = load(
        """
        api_keys = ["k1", "k2"]
        [hooks.on_startup]
        preload = ["q", "llama", "q"]
        [upstream]
        ignore_paths = ['\\.png$']
        [models.qwen]
        cmd = "srv ${PORT}"
        aliases = ["q", "qwen-latest"]
        [models.llama]
        cmd = "srv ${PORT}"
        filters.set_params_by_id = {llama = {a = 1}, "llama-hot" = {temperature = 1.5}}
        [routing.priority]
        q = 10
        llama = -1
        """
    )
    assert config.aliases == {"q": "qwen", "qwen-latest": "qwen", "llama-hot": "llama"}
    assert config.preload == ("qwen", "llama")
    assert config.models["qwen"].priority == 10
    assert config.models["llama"].priority == -1
    assert config.models["llama"].all_aliases == ("llama-hot",)
    assert config.resolve("qwen-latest") is config.models["qwen"]
    assert config.ignore_paths == (re.compile(r"\.png$"),)
    assert config.api_keys == ("k1", "k2")


# -- groups ----------------------------------------------------------------------------------


def test_groups_and_the_implicit_default_group() -> None:
    config = load(
        """
        [models.a]
        cmd = "srv ${PORT}"
        [models.b]
        cmd = "srv ${PORT}"
        [models.c]
        cmd = "srv ${PORT}"
        [routing.groups.pair]
        members = ["c", "a"]
        swap = false
        persistent = true
        """
    )
    groups = config.routing.groups
    assert list(groups) == ["pair", DEFAULT_GROUP]
    assert groups["pair"].members == ("c", "a")
    assert (groups["pair"].swap, groups["pair"].exclusive, groups["pair"].persistent) == (
        False, True, True,
    )  # fmt: skip
    assert groups[DEFAULT_GROUP].members == ("b",)
    assert (groups[DEFAULT_GROUP].swap, groups[DEFAULT_GROUP].exclusive) == (True, True)
    assert {m.id: m.group for m in config.models.values()} == {
        "a": "pair", "b": DEFAULT_GROUP, "c": "pair",
    }  # fmt: skip


def test_no_implicit_group_when_every_model_is_grouped() -> None:
    config = load('[models.a]\ncmd = "srv ${PORT}"\n[routing.groups.g]\nmembers = ["a"]')
    assert list(config.routing.groups) == ["g"]
    assert config.routing.router == "group"
    assert config.routing.matrix is None


# -- files and describe ----------------------------------------------------------------------


def test_load_config_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[models.m]\ncmd = "srv ${PORT}"\n')
    assert load_config(path, environ={}).path == str(path)
    path.write_text('[models.m]\ncmd = "srv ${PORT}"\nttl = "1"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [f"{path}: models.m.ttl: expected int, got str '1'"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml", environ={})
    assert caught.value.problems == [
        f"{tmp_path / 'nope.toml'}: cannot read the file: No such file or directory"
    ]


def test_describe_config_lists_each_model_readably() -> None:
    config = load(
        """
        [models.qwen]
        cmd = "llama-server --port ${PORT} -m '/m/q w.gguf'"
        [models."org/remote"]
        cmd = "ssh box serve"
        proxy = "http://10.0.0.2:8000"
        [routing.groups.remote]
        members = ["org/remote"]
        """
    )
    assert describe_config(config) == [
        "qwen        group=(default)  port=5800  proxy=http://127.0.0.1:5800  "
        "cmd=llama-server --port 5800 -m '/m/q w.gguf'",
        "org/remote  group=remote     port=-     proxy=http://10.0.0.2:8000   cmd=ssh box serve",
    ]
