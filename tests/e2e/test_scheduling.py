"""SPEC 6.5 end to end: the real daemon with real fake-upstream processes, one test per key."""

from __future__ import annotations

import json
from contextlib import aclosing

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from tests.e2e.conftest import StartDaemon
from tests.e2e.test_serve import chat, running_models
from tests.fakes import fake_cmd, free_port


def models_config(
    extra: str = "", args: dict[str, tuple[str, ...]] | None = None, **knobs: str
) -> str:
    """Models ``a`` and ``b`` (one at a time); ``knobs[id]`` is appended to that model's table,
    ``args[id]`` to its fake upstream's command line; ``extra`` goes at the top level."""
    tables = ""
    for name in ("a", "b"):
        cmd = json.dumps(fake_cmd("--model-id", name, *(args or {}).get(name, ())))
        tables += f"[models.{name}]\ncmd = {cmd}\n{knobs.get(name, '')}\n"
    return f"health_check_timeout = 30\nstart_port = {free_port()}\n{extra}\n{tables}"


def slow_stream(model: str, seconds: float) -> dict[str, object]:
    """A streamed chat answer that takes about ``seconds`` (20 chunks)."""
    return chat(model, stream=True, x_tokens=20, x_token_interval=seconds / 20)


async def wait_queue(client: httpx.AsyncClient, reason: str) -> dict[str, object]:
    """Poll ``GET /api/queue`` until a request waits for ``reason``; that entry."""
    with trio.fail_after(WAIT):
        while True:
            for entry in (await client.get("/api/queue")).json()["queue"]:
                if entry["reason"] == reason:
                    return dict(entry)
            await trio.sleep(0.05)


WAIT = 20.0


async def close_code(ws: WebSocketConnection) -> int:
    """Read (and drop) messages until the server closes; its close code."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return int(closed.reason.code)


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


async def test_autoload_off_refuses_409_until_the_api_loads_the_model(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config(a="autoload = false"))
    async with daemon.client() as client:
        refused = await client.post("/v1/chat/completions", json=chat("a"))
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "model_not_loaded"
        assert "POST /api/models/load/a" in error["message"]
        assert await running_models(client) == {}
        assert (await client.post("/api/models/load/a")).status_code == 200
        served = await client.post("/v1/chat/completions", json=chat("a"))
        assert served.json()["served_by"] == "a"


async def test_a_request_held_by_min_residency_is_served_once_the_model_was_resident_long_enough(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config(a="min_residency = 2.0"))
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        loaded_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def ask_b() -> None:
                answers.append(await client.post("/v1/chat/completions", json=chat("b")))

            nursery.start_soon(ask_b)
            entry = await wait_queue(client, "min_residency")
            assert entry["model"] == "b"
            plan = (await client.get("/api/plan/b")).json()
            assert plan["blocked_by"] == [{"model": "a", "in_flight": 0, "reason": "min_residency"}]
        assert answers[0].json()["served_by"] == "b"
        assert trio.current_time() - loaded_at >= 2.0


async def test_a_steady_stream_for_a_no_longer_starves_b(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config(extra="[routing]\nstarvation_after = 1.0"))
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        statuses: list[int] = []
        b_waited: list[float] = []
        stop = trio.Event()

        async def stream_a() -> None:
            async with client.stream(
                "POST", "/v1/chat/completions", json=slow_stream("a", 0.8)
            ) as response:
                async for _ in response.aiter_bytes():
                    pass
                statuses.append(response.status_code)

        async def ask_b() -> None:
            started = trio.current_time()
            response = await client.post("/v1/chat/completions", json=chat("b"))
            b_waited.append(trio.current_time() - started)
            statuses.append(response.status_code)
            stop.set()

        async with trio.open_nursery() as nursery:
            # given requests for a that overlap, so a always has one in flight
            for i in range(80):  # at most 80 x 0.2 s; b is served long before
                nursery.start_soon(stream_a)
                if i == 3:
                    nursery.start_soon(ask_b)
                with trio.move_on_after(0.2):
                    await stop.wait()
                if stop.is_set():
                    break
        # then b was served within starvation_after + one a request + b's load (+ slack)
        assert b_waited, "b was never served while a's stream went on"
        assert b_waited[0] < 1.0 + 0.8 + 3.0
        assert set(statuses) == {200}  # a's requests held back meanwhile were served after b


async def test_queue_timeout_gives_503_with_retry_after(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config(extra="queue_timeout = 1.0"))
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        async with client.stream(
            "POST", "/v1/chat/completions", json=slow_stream("a", 6.0)
        ) as busy:
            started = trio.current_time()
            refused = await client.post("/v1/chat/completions", json=chat("b"))
            waited = trio.current_time() - started
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "queue_timeout"
            assert int(refused.headers["retry-after"]) >= 1
            assert 1.0 <= waited < 5.0
            await busy.aclose()


async def test_queue_timeout_refuses_at_once_when_the_measured_load_is_longer(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        models_config(extra="queue_timeout = 1.0", args={"b": ("--startup-delay", "1.5")})
    )
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/b")).status_code == 200  # measured: >= 1.5 s
        assert (await client.post("/api/models/load/a")).status_code == 200
        plan = (await client.get("/api/plan/b")).json()
        assert plan["estimated_wait_ms"] >= 1500
        started = trio.current_time()
        refused = await client.post("/v1/chat/completions", json=chat("b"))
        assert trio.current_time() - started < 1.0
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "queue_timeout"
        assert int(refused.headers["retry-after"]) >= 2
        assert await running_models(client) == {"a": "ready"}


async def test_plan_explains_without_starting_anything(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(models_config())
    async with daemon.client() as client:
        assert (await client.post("/api/models/load/a")).status_code == 200
        groups = daemon.note_upstreams()
        for _ in range(3):
            response = await client.get("/api/plan/b")
            assert response.status_code == 200
        plan = response.json()
        assert set(plan) == {
            "model",
            "state",
            "would_evict",
            "blocked_by",
            "queue_ahead",
            "estimated_wait_ms",
            "explanation",
        }
        assert plan["model"] == "b"
        assert plan["state"] == "stopped"
        assert plan["would_evict"] == ["a"]
        assert plan["blocked_by"] == []
        assert plan["queue_ahead"] == 0
        assert "evicting 'a'" in plan["explanation"]
        assert await running_models(client) == {"a": "ready"}
        assert daemon.note_upstreams() == groups
        assert (await client.get("/api/plan/nope")).status_code == 404
        # and with a's request in flight, b would wait for it
        async with client.stream(
            "POST", "/v1/chat/completions", json=slow_stream("a", 3.0)
        ) as busy:
            assert busy.status_code == 200
            # (one lines generator, open until the checks are done: a dropped one closes the
            # response, and the request would no longer be in flight)
            async with aclosing(busy.aiter_lines()) as lines:
                async for _ in lines:
                    break  # a's answer has begun
                plan = (await client.get("/api/plan/b")).json()
                assert plan["blocked_by"] == [{"model": "a", "in_flight": 1, "reason": "in_flight"}]
                assert (await client.get("/api/queue")).json() == {"queue": []}
            await busy.aclose()


async def test_a_websocket_that_does_not_hold_its_model_lets_a_swap_happen_and_is_closed(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(models_config(a="websockets_hold_model = false"))
    async with daemon.client() as client:
        host, port = daemon.url.removeprefix("http://").split(":")
        # over a TCP stream we own: trio-websocket 0.12 leaks its socket when the server closes
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"{host}:{port}", "/upstream/a/ws")
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            # the open socket is not in flight: b's request swaps a out at once
            with trio.fail_after(WAIT):
                served = await client.post("/v1/chat/completions", json=chat("b"))
            assert served.json()["served_by"] == "b"
            # and the socket was closed when a stopped
            with trio.fail_after(WAIT):
                assert await close_code(ws) == 1001  # going away
            nursery.cancel_scope.cancel()
