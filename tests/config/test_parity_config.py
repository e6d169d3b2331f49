"""``[peers]``, ``[profiles]`` and ``[selectors]`` (SPEC 6.6): what loads, and every problem."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, load_config_text
from llama_swap_trio.config.parity_model import PeerModel

MODELS = """
[models.qwen]
cmd = "srv --port ${PORT}"
aliases = ["q"]
[models.llama]
cmd = "srv --port ${PORT}"
[routing.groups.pair]
members = ["qwen", "llama"]
swap = false
"""


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(MODELS + text, "c.toml", environ={} if environ is None else environ)
    return [line.removeprefix("c.toml: ") for line in caught.value.problems]


def test_peers_resolve_qualified_and_unique_bare_names() -> None:
    config = load_config_text(
        MODELS
        + """
[peers.box]
proxy = "http://10.0.0.2:8080/"
api_key = "${env.BOX_KEY}"
models = ["m1", "shared", "qwen", "org/m2", "m1"]
filters = { strip_params = "temperature, top_p", set_params = { zdr = true } }
timeouts = { connect = 5 }
[peers.other]
proxy = "https://openrouter.ai/api"
models = ["shared"]
""",
        environ={"BOX_KEY": "k-1"},
    )
    peers = config.parity.peers
    assert peers["box"].proxy == "http://10.0.0.2:8080"
    assert peers["box"].api_key == "k-1"
    assert peers["box"].models == ("m1", "shared", "qwen", "org/m2")  # duplicate dropped
    assert peers["box"].filters.strip_params == ("temperature", "top_p")
    assert peers["box"].timeouts.connect == 5
    assert peers["box"].timeouts.response_header == 60  # llama-swap's peer default
    names = config.parity.peer_models
    assert names["box/m1"] == names["m1"] == PeerModel("box", "m1")
    assert names["box/org/m2"] == names["org/m2"]
    assert "shared" not in names  # two peers have it: qualified names only
    assert names["other/shared"] == PeerModel("other", "shared")
    assert "qwen" not in names  # a local id takes the bare name


def test_profiles_and_selectors_load() -> None:
    config = load_config_text(
        MODELS
        + """
[peers.box]
proxy = "http://127.0.0.1:9"
models = ["m1"]
[profiles.coding]
description = "coder"
pins = { llm = "q", gone = "", pick = "fast", far = "box/m1" }
[selectors.fast]
strategy = "spillover"
targets = ["qwen", "llama", "box/m1"]
spillover = 3
name = "Fast"
metadata = { purpose = "chat" }
"""
    )
    profile = config.parity.profiles["coding"]
    assert profile.pins == {"llm": "q", "gone": "", "pick": "fast", "far": "box/m1"}
    selector = config.parity.selectors["fast"]
    assert (selector.strategy, selector.targets, selector.spillover) == (
        "spillover",
        ("qwen", "llama", "box/m1"),
        3,
    )
    assert selector.metadata == {"purpose": "chat"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[peers.p]\nmodels = ["m"]\n', ["peers.p.proxy: required key is missing"]),
        ('[peers.p]\nproxy = "http://x"\n', ["peers.p.models: required key is missing"]),
        (
            '[peers.p]\nproxy = "http://x"\nmodels = []\n',
            ["peers.p.models: must list at least one model"],
        ),
        (
            '[peers.p]\nproxy = "ftp://x"\nmodels = ["m"]\n',
            ["peers.p.proxy: must be an http:// or https:// URL, got 'ftp://x'"],
        ),
        (
            '[peers.p]\nproxy = "http://x"\nmodels = ["m"]\napi_key = "${env.NOPE}"\n',
            ["peers.p.api_key: environment variable 'NOPE' is not set"],
        ),
        (
            '[peers.p]\nproxy = "http://x"\nmodels = ["m"]\napi_key = "a b"\n',
            ["peers.p.api_key: must be ASCII, without spaces or control characters"],
        ),
        (
            '[peers.p]\nproxy = "http://x"\nmodels = ["m"]\napi_kye = "k"\n',
            ["peers.p.api_kye: unknown key (did you mean 'api_key'?)"],
        ),
        (
            '[peers.p]\nproxy = "http://x"\nmodels = ["m"]\nfilters = { strip_params = "model" }\n',
            [
                "peers.p.filters.strip_params: must not contain 'model': "
                "the proxy sets the peer's model name itself"
            ],
        ),
        (
            '[peers."a/b"]\nproxy = "http://x"\nmodels = ["m"]\n',
            ["peers.\"a/b\": peer ids may only contain letters, digits and . : - _ (no '/')"],
        ),
        (
            '[peers.qwen]\nproxy = "http://x"\nmodels = ["x"]\n'
            '[models.x]\ncmd = "s"\nproxy = "http://y"\naliases = ["qwen/x"]\n',
            [
                "peers.qwen.models[0]: 'qwen/x' (this peer's name for it) is also an alias of "
                "model 'x'"
            ],
        ),
        (
            '[peers.a]\nproxy = "http://x"\nmodels = ["b/c"]\n'
            '[peers."a-b"]\nproxy = "http://x"\nmodels = ["c"]\n'
            '[peers.z]\nproxy = "http://x"\nmodels = ["a/b/c"]\n',
            [],  # a/b/c (peer a) and a-b/c differ; z's bare "a/b/c" yields to a's qualified one
        ),
        (
            '[selectors.s]\ntargets = ["qwen"]\n',
            ["selectors.s.strategy: required key is missing"],
        ),
        (
            '[selectors.s]\nstrategy = "hot"\ntargets = ["qwen"]\n',
            ["selectors.s.strategy: must be one of 'warm', 'pin', 'spillover', got 'hot'"],
        ),
        (
            '[selectors.s]\nstrategy = "pin"\ntargets = []\n',
            ["selectors.s.targets: must list at least one target"],
        ),
        (
            '[selectors.q]\nstrategy = "pin"\ntargets = ["qwen"]\n',
            ["selectors.q: the selector id 'q' is also an alias of model 'qwen'"],
        ),
        (
            '[selectors.s]\nstrategy = "pin"\ntargets = ["t"]\n'
            '[selectors.t]\nstrategy = "pin"\ntargets = ["nope"]\n',
            [
                "selectors.s.targets[0]: 't' is a selector; selector chaining is not supported",
                "selectors.t.targets[0]: unknown model 'nope'",
            ],
        ),
        (
            '[selectors.s]\nstrategy = "spillover"\ntargets = ["qwen", "q"]\nspillover = 0\n',
            [
                "selectors.s.spillover: must be >= 1, got 0",
                "selectors.s.targets[1]: 'q' is the same model as targets[0]",
            ],
        ),
        (
            '[peers.p]\nproxy = "http://x"\nmodels = ["m"]\n'
            '[selectors.s]\nstrategy = "warm"\ntargets = ["qwen", "p/m"]\n',
            ["selectors.s.targets[1]: 'p/m' is a peer model; the warm strategy needs local models"],
        ),
        (
            '[models.solo]\ncmd = "srv --port ${PORT}"\n'
            '[selectors.s]\nstrategy = "spillover"\ntargets = ["qwen", "solo"]\n',
            [
                "selectors.s.targets: spillover targets must share one routing group (with swap = "
                "false)"
            ],
        ),
        (
            "[profiles.p]\npins = {}\n",
            ["profiles.p.pins: must contain at least one pin"],
        ),
        (
            '[profiles.p]\npins = { a = "nope", b = 3 }\n',
            [
                "profiles.p.pins.b: expected str, got int 3",
                "profiles.p.pins.a: unknown model 'nope'",
            ],
        ),
        (
            '[profiles.p]\npins = { a = "nope" }\ndescripton = "x"\n',
            [
                "profiles.p.descripton: unknown key (did you mean 'description'?)",
                "profiles.p.pins.a: unknown model 'nope'",
            ],
        ),
    ],
)
def test_bad_parity_tables_report_every_problem(text: str, expected: list[str]) -> None:
    if not expected:
        load_config_text(MODELS + text, environ={})
        return
    assert problems_of(text) == expected
