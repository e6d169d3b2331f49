"""Connections to upstreams do not outlive the upstream process."""

from __future__ import annotations

import trio

from tests.e2e.conftest import StartDaemon
from tests.reliability.helpers import DEBUG_ENV, chat, models_config


async def test_a_stopped_models_pooled_connections_are_closed(start_daemon: StartDaemon) -> None:
    # given a model that served a request (so the daemon pools a connection to it)
    daemon = await start_daemon(models_config({"a": ()}), env=DEBUG_ENV)
    async with daemon.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        assert (await client.get("/debug/state")).json()["pool"] == ["a#1"]
        # when the model is unloaded
        assert (await client.post("/api/models/unload/a")).status_code == 200
        # then its pooled sockets are closed, not left in CLOSE-WAIT until it starts again
        with trio.fail_after(5):
            while (await client.get("/debug/state")).json()["pool"]:
                await trio.sleep(0.02)
