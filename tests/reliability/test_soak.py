"""A bounded soak: many clients alternate requests over three models that swap one at a time.

Every request must be answered by the model it named (or a clear proxy error), and afterwards
nothing may be left: no in-flight count, no queue entry, no extra upstream process, no file
descriptor beyond the baseline. CI runs a reduced form (200 requests, 16 clients); the full form
(RELIABILITY.md) is::

    SOAK_REQUESTS=1000 SOAK_CLIENTS=32 python -m pytest -m soak -s tests/reliability/test_soak.py
"""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import pytest
import trio

from tests.e2e.conftest import StartDaemon
from tests.reliability.helpers import (
    DEBUG_ENV,
    chat,
    fd_targets,
    models_config,
    open_fds,
    sockets_of,
    upstream_groups,
    wait_quiet,
)

MODELS = ("a", "b", "c")


async def settle_fds(client: httpx.AsyncClient, pid: int, target: int | None = None) -> int:
    """Load and unload each model once (a new process generation closes the previous one's pooled
    sockets), unload everything, and count the daemon's fds; with ``target``, wait up to 10 s for
    the count to come down to it (closed client connections are noticed asynchronously)."""
    for model in MODELS:
        assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200
    assert (await client.post("/api/models/unload")).status_code == 200
    await wait_quiet(client)
    with trio.move_on_after(10):
        while target is not None and open_fds(pid) > target:
            await trio.sleep(0.05)
    return open_fds(pid)


@pytest.mark.soak
async def test_soak_of_alternating_requests_leaves_nothing_behind(
    start_daemon: StartDaemon,
) -> None:
    total = int(os.environ.get("SOAK_REQUESTS", "200"))
    clients = int(os.environ.get("SOAK_CLIENTS", "16"))
    daemon = await start_daemon(
        models_config({m: ("--tokens", "3") for m in MODELS}), env=DEBUG_ENV
    )
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    async with daemon.client() as control:
        baseline_fds = await settle_fds(control, daemon.process.pid)
    async with daemon.client(limits=httpx.Limits(max_connections=clients)) as client:
        next_index = 0
        started = trio.current_time()

        async def one(index: int) -> None:
            model = MODELS[index % len(MODELS)]
            stream = index % 5 == 0
            body = chat(model, stream=stream)
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                text = (await response.aread()).decode()
            if response.status_code == 200:
                served = (
                    f'"{model} says' in text if stream else json.loads(text)["served_by"] == model
                )
                outcomes["ok" if served else "wrong model"] += 1
                if not served:
                    wrong.append(f"{model}: {text[:200]}")
                return
            error = json.loads(text)
            assert error["src"] == "llama-swap-trio", text  # a clear error of ours
            outcomes[f"{response.status_code} {error['error']['code']}"] += 1

        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                index = next_index
                next_index += 1
                await one(index)

        with trio.fail_after(170):
            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(worker)
        duration = trio.current_time() - started

        state = await wait_quiet(client)
        end_groups = upstream_groups(daemon)
        running = [m["id"] for m in state["models"] if m["state"] != "stopped"]
    # the soak's own keep-alive connections are closed now; a fresh client measures
    async with daemon.client() as control:
        end_fds = await settle_fds(control, daemon.process.pid, baseline_fds)
        after_unload_groups = upstream_groups(daemon)

    errors = sum(n for kind, n in outcomes.items() if kind != "ok")
    report = {
        "requests": total,
        "clients": clients,
        "duration_s": round(duration, 1),
        "outcomes": dict(outcomes),
        "errors": errors,
        "in_flight_left": sum(m["in_flight"] for m in state["models"]),
        "queue_left": len(state["queue"]),
        "upstream_groups_left_after_unload": len(after_unload_groups),
        "fds_baseline": baseline_fds,
        "fds_end": end_fds,
    }
    if end_fds > baseline_fds + 2:
        report["fd_targets_end"] = fd_targets(daemon.process.pid)
        report["sockets_end"] = sockets_of(daemon.process.pid)
    print("SOAK " + json.dumps(report))
    if os.environ.get("SOAK_REPORT"):
        await trio.Path(os.environ["SOAK_REPORT"]).write_text(json.dumps(report, indent=2))
    assert sum(outcomes.values()) == total
    assert not wrong, wrong[:5]
    assert errors == 0, outcomes
    assert len(end_groups) == len(running) <= 1  # one model at a time, nothing else alive
    assert not after_unload_groups
    assert end_fds <= baseline_fds + 2, report
