"""SPEC 6.5 end to end: the real daemon with real fake-upstream processes, one test per key."""

from __future__ import annotations

import json

from tests.e2e.conftest import StartDaemon
from tests.e2e.test_serve import chat, running_models
from tests.fakes import fake_cmd, free_port


def models_config(extra: str = "", **knobs: str) -> str:
    """Models ``a`` and ``b`` (one at a time); ``knobs[id]`` is appended to that model's table."""
    tables = ""
    for name in ("a", "b"):
        cmd = json.dumps(fake_cmd("--model-id", name))
        tables += f"[models.{name}]\ncmd = {cmd}\n{knobs.get(name, '')}\n"
    return f"health_check_timeout = 30\nstart_port = {free_port()}\n{extra}\n{tables}"


async def test_protected_model_refuses_a_swap_409_and_force_loads_past_it(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config(a="protected = true"))
    async with daemon.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        refused = await client.post("/v1/chat/completions", json=chat("b"))
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "model_protected"
        assert "'a'" in error["message"]
        assert "/api/models/unload/a" in error["message"]
        assert await running_models(client) == {"a": "ready"}

        api = await client.post("/api/models/load/b")
        assert api.status_code == 409
        assert "?force=true" in api.json()["error"]["message"]
        forced = await client.post("/api/models/load/b?force=true")
        assert forced.status_code == 200
        assert await running_models(client) == {"b": "ready"}
        # once unloaded by hand, a protected model is free to go: b is served after unloading a
        assert (await client.post("/api/models/load/a")).status_code == 200
        assert (await client.post("/api/models/unload/a")).status_code == 200
        served = await client.post("/v1/chat/completions", json=chat("b"))
        assert served.json()["served_by"] == "b"
