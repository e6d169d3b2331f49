"""Browser safety end to end: a foreign web page can neither unload models nor rebind its way in."""

from __future__ import annotations

import json

import httpx

from tests.e2e.conftest import StartDaemon
from tests.edge.test_listen import has_ipv6_loopback
from tests.fakes import fake_cmd, free_port


def one_model() -> str:
    return f"""
health_check_timeout = 30
start_port = {free_port()}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""


async def test_a_foreign_page_cannot_unload_models(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(one_model())
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        # what a form or fetch() on another site sends: its Origin, or a rebound Host
        foreign = await client.post(
            "/api/models/unload", headers={"origin": "https://evil.example"}
        )
        rebound = await client.post(
            "/api/models/unload",
            headers={"host": "evil.example:8080", "origin": "http://evil.example:8080"},
        )
        running = (await client.get("/running")).json()["running"]
        assert [entry["model"] for entry in running] == ["a"]
        # the daemon's own page may
        own = await client.post("/api/models/unload", headers={"origin": daemon.url})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert rebound.status_code == 421
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    assert own.status_code == 200
    assert own.json()["unloaded"] == ["a"]


async def test_listen_on_every_interface_serves_ipv4_and_ipv6(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(one_model(), "--listen", ":0")
    assert daemon.url.startswith("http://[::]:")  # one dual-stack socket: one port
    port = daemon.url.rsplit(":", 1)[1]
    bases = [f"http://127.0.0.1:{port}"]
    if has_ipv6_loopback():
        bases.append(f"http://[::1]:{port}")
    for base in bases:
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as client:
            # beyond loopback the Host rule is off: the daemon is reachable by any name
            response = await client.get("/v1/models", headers={"host": f"llm.lan:{port}"})
            assert response.status_code == 200
