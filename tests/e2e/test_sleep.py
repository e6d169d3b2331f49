"""Sleep mode end to end (SPEC 6.7): the real daemon, demo upstreams in ``--sleep-mode``."""

from __future__ import annotations

import time

import httpx

from tests.e2e.conftest import StartDaemon
from tests.e2e.test_memory import chat, demo, running
from tests.fakes import free_port

STARTUP = 3.0


def sleep_config() -> str:
    return f"""
health_check_timeout = 30
start_port = {free_port()}
[models.a]
cmd = {demo("a", "--sleep-mode", "--startup-delay", str(STARTUP))}
sleep = {{ sleep = "POST /sleep?level=1", wake = "POST /wake_up" }}
[models.b]
cmd = {demo("b")}
"""


async def listed_state(client: httpx.AsyncClient, model: str) -> dict[str, str]:
    body = (await client.get("/v1/models")).json()
    return next(record["status"] for record in body["data"] if record["id"] == model)


async def test_an_evicted_model_sleeps_with_its_pid_and_a_request_wakes_it(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(sleep_config())
    async with daemon.client() as client:
        before = daemon.note_upstreams()  # the watchdog's group
        began = time.monotonic()
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        cold = time.monotonic() - began
        assert cold >= STARTUP
        [group_a] = daemon.note_upstreams() - before
        # b needs the (implicit, one-at-a-time) group: a goes to sleep instead of stopping
        assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 200
        assert await running(client) == {"a": "sleeping", "b": "ready"}
        assert await listed_state(client, "a") == {"value": "loaded", "state": "sleeping"}
        assert group_a in daemon.note_upstreams()  # the same process lives on
        # a request for a wakes it: far faster than its cold start, in the same process
        began = time.monotonic()
        answer = await client.post("/v1/chat/completions", json=chat("a"))
        woke = time.monotonic() - began
        assert answer.status_code == 200
        assert woke < cold
        assert group_a in daemon.note_upstreams()
        assert (await running(client))["a"] == "ready"
    await daemon.wait_for_line("[a] asleep (POST /sleep?level=1)")
    await daemon.wait_for_line("[a] awake in")
