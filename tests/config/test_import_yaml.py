"""``import-yaml``: llama-swap YAML configs converted to TOML that passes ``check`` (SPEC 6.6)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llama_swap_trio.cli import main
from llama_swap_trio.config import ConfigError, load_config_text
from llama_swap_trio.config.import_yaml import convert, import_yaml_file, parse_yaml
from llama_swap_trio.config.model import Config

EXAMPLE = Path(__file__).parent.parent / "data" / "llama-swap" / "config.example.yaml"
ENV = {"HOME": "/home/u", "API_KEY_1": "k1", "API_KEY_2": "k2", "OPENROUTER_API_KEY": "or-key"}


def converted(yaml_text: str, environ: dict[str, str] | None = None) -> tuple[str, Config]:
    toml = convert(parse_yaml(textwrap.dedent(yaml_text), "c.yaml"))
    return toml, load_config_text(toml, "out.toml", environ={} if environ is None else environ)


def not_converted(toml: str) -> list[str]:
    prefix = "# not converted: "
    return [line[len(prefix) :] for line in toml.splitlines() if line.startswith(prefix)]


def test_the_example_config_converts_to_a_config_that_passes_check() -> None:
    toml = import_yaml_file(str(EXAMPLE))
    config = load_config_text(toml, "example.toml", environ=ENV)

    # every model's resolved command is llama-swap's: macros (model ones override global ones),
    # the comment line of the `cmd: |` block dropped, ${PORT} in sorted id order from startPort
    gpt = config.models["gpt-oss-120b"]
    assert gpt.argv == (
        "/path/to/llama-server/llama-server-ec9e0301",
        *("--port", "10002", "--model", "path/to/gpt-oss-120B.gguf"),
        *("--ctx-size", "16384", "--temperature", "0.7"),
    )
    docker = config.models["docker-llama"]
    assert docker.argv[:4] == ("docker", "run", "--name", "docker-llama")
    assert "10001:8080" in docker.argv
    assert docker.cmd_stop == "docker stop docker-llama"
    assert gpt.env == {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    assert gpt.filters.strip_params == ("temperature", "top_k", "top_p")
    assert gpt.metadata["port"] == 10002  # `port: ${PORT}` stays an int
    assert gpt.metadata["temperature"] == 0.7
    assert set(gpt.all_aliases) == {"gpt-4o-mini", "gpt-oss-120b:high", "gpt-oss-120b:low"}
    assert gpt.timeouts.response_header == 60
    assert config.health_check_timeout == 500
    assert config.activity.max_entries == 1000  # metricsMaxInMemory
    assert config.start_port == 10001
    assert config.api_keys == (
        "sk-hunter2",
        "sk-gyCPiKUcIfPlaM4OSMZekkprgijPx6+OsmQs8Rsg0xZ9qpy6gKWsIKqHOk+cgXVx",
        "k1",
        "k2",
    )
    assert [p.pattern for p in config.ignore_paths][1] == r"^\/ws$|^\/api\/jobs$"
    assert docker.group == "group2"

    parity = config.parity
    assert parity.peers["openrouter"].api_key == "or-key"
    assert parity.peers["openrouter"].filters.set_params == {
        "provider": {"data_collection": "deny", "zdr": True}
    }
    assert parity.peers["llama-swap-peer"].models == ("model_a", "model_b", "embeddings/model_c")
    assert parity.profiles["coding"].pins == {"llm-code": "gpt-oss-120b", "image-gen": ""}
    assert parity.selectors["llama"].spillover == 4
    assert parity.selectors["llm-plan"].targets == ("gpt-oss-120b", "z-ai/glm-4.7")

    skipped = not_converted(toml)
    for key in (
        "logTimeFormat",
        "captureBuffer",
        "ui",
        "performance",
        "models.gpt-oss-120b.compat",
        "models.gpt-oss-120b.capabilities",
        "models.gpt-oss-120b.timeouts.keepalive",
        "models.unlisted-model",
        "hooks.on_startup.preload[0]",
        "routing.router.settings.matrix",
        "routing.scheduler.settings.fifo.priority.A",
        "selectors.coding-model.targets[1]",
        "profiles.coding.pins.llm-plan",
    ):
        assert any(line.startswith(key + ":") for line in skipped), key


def test_camel_case_legacy_groups_priority_env_lists_and_filters() -> None:
    toml, config = converted(
        """
        healthCheckTimeout: 60
        metricsMaxInMemory: 0
        store: {path: /var/lib/ls/activity.sqlite}
        globalTTL: 300
        includeAliasesInList: true
        macros:
          srv: "llama-server --port ${PORT}"
        models:
          qwen:
            cmd: |
              ${srv}
              # a comment line
              -m /m/qwen.gguf \\
                --temp 0.5
            env: ["A=1", "B=two=2"]
            checkEndpoint: /ready
            unloadTimeout: 3
            concurrencyLimit: 4
            useModelName: "Qwen/Qwen2.5"
            filters:
              strip_params: "top_k,temperature, top_k"
              setParamsByID:
                "qwen:fast": {n_predict: 16}
          embed:
            cmd: embed-server --port 9000
            proxy: http://127.0.0.1:9000
            unlisted: true
            sendLoadingState: false
        groups:
          chat:
            members: [qwen]
          side:
            swap: false
            exclusive: false
            persistent: true
            members: [embed]
        routing:
          scheduler:
            use: fifo
            settings:
              fifo:
                priority: {qwen: 10, "qwen:fast": 5}
        hooks:
          on_startup:
            preload: [embed]
        """
    )
    qwen, embed = config.models["qwen"], config.models["embed"]
    assert qwen.argv == ("llama-server", "--port", "5800", "-m", "/m/qwen.gguf", "--temp", "0.5")
    assert qwen.env == {"A": "1", "B": "two=2"}
    assert (qwen.check_endpoint, qwen.unload_timeout, qwen.concurrency_limit) == ("/ready", 3, 4)
    assert qwen.use_model_name == "Qwen/Qwen2.5"
    assert qwen.filters.strip_params == ("temperature", "top_k")
    assert qwen.filters.set_params_by_id == {"qwen:fast": {"n_predict": 16}}
    assert qwen.group == "chat"
    assert qwen.priority == 10
    assert qwen.ttl == 300
    assert embed.argv == ("embed-server", "--port", "9000")
    assert embed.unlisted
    assert not embed.send_loading_state
    side = config.routing.groups["side"]
    assert (side.swap, side.exclusive, side.persistent) == (False, False, True)
    assert config.preload == ("embed",)
    assert config.activity.max_entries == 1000
    assert config.activity.db == "/var/lib/ls/activity.sqlite"
    assert config.include_aliases_in_list
    assert config.health_check_timeout == 60
    # llama-swap ignores a priority given to an alias
    assert not_converted(toml) == [
        "routing.scheduler.settings.fifo.priority.qwen:fast: an alias; llama-swap looks "
        "priorities up by model id, so it has no effect"
    ]


def test_yaml_scalars_are_read_as_yaml_1_2() -> None:
    doc = parse_yaml("a: off\nb: yes\nc: 1:30\nd: true\ne: 010\nf: 0x1f\ng: 1.5\n", "c.yaml")
    assert doc == {"a": "off", "b": "yes", "c": "1:30", "d": True, "e": "010", "f": 31, "g": 1.5}


def test_matrix_router_peers_profiles_and_selectors() -> None:
    _, config = converted(
        """
        models:
          a: {cmd: "srv --port ${PORT}"}
          b: {cmd: "srv --port ${PORT}"}
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {x: a}
                evict_costs: {x: 5}
                sets: {both: "x & b"}
        peers:
          box:
            proxy: http://10.0.0.9:8080
            apiKey: ${env.BOX}
            models: [m1]
            filters: {stripParams: "temperature"}
            timeouts: {connect: 2, responseHeader: 30}
        profiles:
          p: {description: d, pins: {chat: box/m1, off: ~}}
        selectors:
          s:
            strategy: spillover
            targets: [a, b, m1]
            settings: {spillover: 2}
        """,
        environ={"BOX": "secret"},
    )
    assert config.routing.router == "matrix"
    assert config.routing.matrix is not None
    assert config.routing.matrix.evict_costs["a"] == 5
    peer = config.parity.peers["box"]
    assert (peer.api_key, peer.timeouts.connect, peer.timeouts.response_header) == ("secret", 2, 30)
    assert config.parity.profiles["p"].pins == {"chat": "box/m1", "off": ""}
    assert config.parity.selectors["s"].targets == ("a", "b", "m1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  a: {cmd: x\n", "c.yaml: line 3, column 1: "),
        ("models:\n\tqwen: 1\n", "c.yaml: line 2, column 1: "),
        ("- 1\n- 2\n", "c.yaml: the top level must be a mapping of keys"),
    ],
)
def test_bad_yaml_is_reported_with_line_and_column(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "c.yaml")
    assert caught.value.problems[0].startswith(expected)


def test_the_command_prints_toml_or_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "config.yaml"
    good.write_text("models:\n  a:\n    cmd: srv --port ${PORT}\n")
    assert main(["import-yaml", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Converted from config.yaml by llama-swap-trio import-yaml.")
    assert load_config_text(out).models["a"].argv == ("srv", "--port", "5800")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    assert main(["import-yaml", str(bad)]) == 2
    assert "line 2, column 1" in capsys.readouterr().err
