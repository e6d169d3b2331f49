"""Memory budgets end to end (SPEC 6.7): the real daemon, demo upstreams, declared sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import StartDaemon
from tests.fakes import free_port


def demo(model_id: str, *extra: str) -> str:
    argv = [sys.executable, "-m", "llama_swap_trio", "demo-upstream", "--port", "${PORT}"]
    return json.dumps(" ".join([*argv, "--model-id", model_id, *extra]))


def budget_config(*, big: str = "16GiB", extra: str = "") -> str:
    """Three models in one group that lets them all run together: only memory decides."""
    return f"""
health_check_timeout = 30
start_port = {free_port()}
[resources]
gpu_memory = "24GiB"
[routing.groups.all]
swap = false
members = ["small1", "small2", "big"]
[models.small1]
cmd = {demo("small1")}
memory = "8GiB"
[models.small2]
cmd = {demo("small2")}
memory = "8GiB"
[models.big]
cmd = {demo("big")}
memory = "{big}"
{extra}
"""


GiB = 1024**3


async def first_feed_message(client: httpx.AsyncClient) -> dict[str, Any]:
    """The feed's first message (the snapshot), over SSE."""
    async with client.stream("GET", "/api/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                message: dict[str, Any] = json.loads(line[len("data: ") :])
                return message
    raise AssertionError("the feed ended before its snapshot")


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def running(client: httpx.AsyncClient) -> dict[str, str]:
    body = (await client.get("/running")).json()
    return {entry["model"]: entry["state"] for entry in body["running"]}


async def test_two_small_models_run_together_and_a_big_one_evicts_the_least_recent(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(budget_config())
    async with daemon.client() as client:
        for model in ("small1", "small2"):
            assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200
        assert await running(client) == {"small1": "ready", "small2": "ready"}
        resources = (await client.get("/api/resources")).json()
        assert resources == {
            "gpu_memory": 24 * GiB,
            "used": 16 * GiB,
            "free": 8 * GiB,
            "models": [
                {"model": "small1", "state": "ready", "declared": 8 * GiB, "measured": None},
                {"model": "small2", "state": "ready", "declared": 8 * GiB, "measured": None},
            ],
        }
        snapshot = await first_feed_message(client)
        assert snapshot["type"] == "snapshot"
        assert snapshot["resources"]["gpu_memory"] == 24 * GiB
        assert snapshot["resources"]["used"] == 16 * GiB
        assert snapshot["resources"]["sizes"]["big"] == [16 * GiB, 0]
        # small1 is now the more recent: big (16 GiB) needs one 8 GiB model gone, small2
        assert (await client.post("/v1/chat/completions", json=chat("small1"))).status_code == 200
        daemon.note_upstreams()
        assert (await client.post("/v1/chat/completions", json=chat("big"))).status_code == 200
        assert await running(client) == {"small1": "ready", "big": "ready"}
        # small2 again: 8 + 16 + 8 > 24, and small1 is now the least recently used
        assert (await client.post("/v1/chat/completions", json=chat("small2"))).status_code == 200
        assert await running(client) == {"big": "ready", "small2": "ready"}
        daemon.note_upstreams()
    line = await daemon.wait_for_line("evict for memory (least recently used first)=[small2]")
    assert "swap: loading big" in line


def check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "llama_swap_trio", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_shows_each_size_and_refuses_a_model_larger_than_the_budget(tmp_path: Path) -> None:
    good = check(budget_config(), tmp_path)
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert any(line.startswith("small1") and "memory=8.0GiB (fits)" in line for line in lines)
    assert any(line.startswith("big") and "memory=16.0GiB (fits)" in line for line in lines)
    assert "resources: gpu_memory=24.0GiB" in good.stdout

    bad = check(budget_config(big="32GiB"), tmp_path)
    assert bad.returncode == 2
    assert "models.big.memory: 32.0GiB is more than resources.gpu_memory (24.0GiB)" in bad.stderr
    assert "could never run" in bad.stderr
