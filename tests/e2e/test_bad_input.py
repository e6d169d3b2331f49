"""Bad input found when tried (SPEC 6.1), against the real daemon: each gets a clean answer."""

from __future__ import annotations

import json

from tests.e2e.conftest import StartDaemon
from tests.fakes import fake_cmd, free_port


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_a_stream_over_the_concurrency_limit_gets_a_plain_429_before_any_stream(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        f"""
health_check_timeout = 30
start_port = {free_port()}
send_loading_state = true
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a", "--startup-delay", "1.5"))}
concurrency_limit = 1
"""
    )
    async with daemon.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as r:
            # the first request is admitted: its loading-state stream has begun
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream"
            refused = await client.post("/v1/chat/completions", json=chat("a", stream=True))
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "concurrency_limit"
            await r.aread()
