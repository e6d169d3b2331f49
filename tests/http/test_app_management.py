"""/v1/models, /running, load and unload endpoints."""

from __future__ import annotations

import pytest

from llama_swap_trio import errors
from llama_swap_trio.http.models_list import models_list, running_list
from llama_swap_trio.routing.api import ModelStatus, RouterSnapshot
from llama_swap_trio.upstream.api import UpstreamState
from tests.http.appkit import config, filters, harness, model

S = UpstreamState


def snapshot(**states: UpstreamState) -> RouterSnapshot:
    return RouterSnapshot(
        models=tuple(ModelStatus(mid, state, 0) for mid, state in sorted(states.items())),
        queue=(),
    )


def test_models_are_listed_sorted_with_status_and_without_unset_fields() -> None:
    cfg = config(model("zeta"), model("alpha"), model("hidden", unlisted=True))
    body = models_list(cfg, snapshot(zeta=S.READY, alpha=S.STOPPED, hidden=S.READY), 1700)
    assert body == {
        "object": "list",
        "data": [
            {
                "id": "alpha",
                "object": "model",
                "created": 1700,
                "owned_by": "llama-swap-trio",
                "status": {"value": "unloaded", "state": "stopped"},
            },
            {
                "id": "zeta",
                "object": "model",
                "created": 1700,
                "owned_by": "llama-swap-trio",
                "status": {"value": "loaded", "state": "ready"},
            },
        ],
    }


@pytest.mark.parametrize(
    ("state", "value"),
    [
        (S.STOPPED, "unloaded"),
        (S.SHUTDOWN, "unloaded"),
        (S.STARTING, "loaded"),
        (S.READY, "loaded"),
        (S.STOPPING, "loaded"),
    ],
)
def test_loaded_means_any_state_but_stopped_and_shutdown(state: UpstreamState, value: str) -> None:
    (record,) = models_list(config(model("m")), snapshot(m=state), 0)["data"]
    assert record["status"] == {"value": value, "state": str(state)}


def test_model_missing_from_the_snapshot_counts_as_stopped() -> None:
    (record,) = models_list(config(model("m")), snapshot(), 0)["data"]
    assert record["status"] == {"value": "unloaded", "state": "stopped"}


def test_name_description_and_meta_with_aliases() -> None:
    m = model(
        "q",
        name=" Qwen ",
        description="a model",
        aliases=("gpt",),
        metadata={"port": 5800, "tags": ["a"], "nested": {"x": True}},
        filters=filters(set_params_by_id={"q:hot": {"t": 1}, "q": {"t": 0}}),
    )
    (record,) = models_list(config(m), snapshot(q=S.STOPPED), 5)["data"]
    assert record["name"] == "Qwen"
    assert record["description"] == "a model"
    assert record["meta"] == {
        "port": 5800,
        "tags": ["a"],
        "nested": {"x": True},
        "aliases": ["gpt", "q:hot"],
    }


def test_aliases_listed_as_records_when_configured() -> None:
    cfg = config(
        model("q", aliases=("b-alias", "0-alias"), name="Q"),
        model("hidden", aliases=("h",), unlisted=True),
        include_aliases_in_list=True,
    )
    data = models_list(cfg, snapshot(q=S.READY), 9)["data"]
    assert [record["id"] for record in data] == ["0-alias", "b-alias", "q"]
    alias = data[0]
    assert alias["name"] == "Q"
    assert alias["status"] == {"value": "loaded", "state": "ready"}
    assert alias["meta"] == {"aliases": ["b-alias", "0-alias"], "alias_of": "q"}
    assert "alias_of" not in data[2]["meta"]


def test_running_lists_models_that_are_not_stopped() -> None:
    cfg = config(
        model("b", ttl=60, name="B", description="bee"), model("a"), model("c"), model("d")
    )
    body = running_list(cfg, snapshot(a=S.STARTING, b=S.READY, c=S.STOPPED, d=S.SHUTDOWN))
    assert [entry["model"] for entry in body["running"]] == ["a", "b", "d"]
    assert body["running"][1] == {
        "model": "b",
        "state": "ready",
        "cmd": "server --port 5800",
        "proxy": "http://127.0.0.1:5800",
        "ttl": 60,
        "name": "B",
        "description": "bee",
    }


async def test_models_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        for path in ("/v1/models", "/models"):
            response = await h.client.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert [r["id"] for r in response.json()["data"]] == ["q"]
        h.router.set_state("q", S.READY)
        running = (await h.client.get("/running")).json()
        assert [entry["model"] for entry in running["running"]] == ["q"]


async def test_load_and_unload_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(model("org/q", aliases=("gpt",)), model("r"))
    async with harness(cfg, monkeypatch) as h:
        loaded = await h.client.post("/api/models/load/gpt")
        assert (loaded.status_code, loaded.json()) == (200, {"msg": "ok", "state": "ready"})
        assert h.router.loads == ["org/q"]
        await h.client.post("/api/models/load/r")

        one = await h.client.post("/api/models/unload/org/q")
        assert (one.status_code, one.json()) == (200, {"msg": "ok"})
        again = await h.client.post("/api/models/unload/org%2Fq")
        assert again.status_code == 200  # not running: still ok
        assert h.router.unloads == ["org/q", "org/q"]

        everything = await h.client.post("/api/models/unload")
        assert everything.json() == {"msg": "ok", "unloaded": ["r"]}

        for path in ("/api/models/unload/nope", "/api/models/load/nope"):
            missing = await h.client.post(path)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "model_not_found"


async def test_load_failure_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        h.router.errors["q"] = errors.gateway_timeout("q", "health check timed out after 5s")
        response = await h.client.post("/api/models/load/q")
        assert response.status_code == 504
        assert "health check" in response.json()["error"]["message"]
