"""Error envelopes end to end: each status the app answers itself, JSON or text/plain."""

from __future__ import annotations

import json

import pytest
import trio

from llama_swap_trio import errors
from llama_swap_trio.http.errors import error_bytes, wants_text
from tests.http.appkit import Daemonish, config, harness, model


def accept(value: str) -> dict[str, object]:
    return {"headers": [(b"accept", value.encode())]}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("text/plain", True),
        ("text/plain, */*;q=0.1", True),
        ("application/json", False),
        ("text/plain, application/json", False),
        ("*/*", False),
        ("text/html", False),
    ],
)
def test_text_only_when_accept_asks_for_text_plain_and_not_json(value: str, text: bool) -> None:
    assert wants_text(accept(value)) is text


def test_no_accept_header_means_json() -> None:
    assert not wants_text({"headers": []})


def test_json_envelope_has_the_spec_shape() -> None:
    content_type, body = error_bytes(errors.model_not_found("foo"))
    assert content_type == b"application/json"
    assert json.loads(body) == {
        "src": "llama-swap-trio",
        "error": {
            "message": "model 'foo' not found",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        },
    }


def test_text_rendering_carries_the_message() -> None:
    content_type, body = error_bytes(errors.model_not_found("foo"), as_text=True)
    assert content_type.startswith(b"text/plain")
    assert body == b"llama-swap-trio: model 'foo' not found\n"


def envelope_code(response: object) -> tuple[int, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert body["src"] == "llama-swap-trio"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return response.status_code, body["error"]["code"]  # type: ignore[attr-defined]


async def test_statuses_the_app_answers_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(model("q"), model("busy", concurrency_limit=1), model("secret"))
    async with harness(cfg, monkeypatch) as h:
        c = h.client
        assert envelope_code(await c.post("/v1/chat/completions", json={})) == (
            400,
            "model_required",
        )
        bad = await c.post(
            "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert envelope_code(bad) == (400, "invalid_json")
        assert envelope_code(await c.post("/v1/embeddings", json=[1])) == (400, "invalid_request")

        missing = await c.post("/v1/chat/completions", json={"model": "nope"})
        assert envelope_code(missing) == (404, "model_not_found")
        assert "nope" in missing.json()["error"]["message"]
        assert "secret" not in missing.text  # never lists the configured models

        assert envelope_code(await c.get("/no/such/path")) == (404, "not_found")

        h.router.errors["busy"] = errors.concurrency_limit("busy", 1)
        limited = await c.post("/v1/completions", json={"model": "busy"})
        assert envelope_code(limited) == (429, "concurrency_limit")
        assert limited.headers["retry-after"] == "1"

        h.router.errors["q"] = errors.upstream_error("q", "exited before ready")
        with h.kit.bus.subscribe() as events:
            assert envelope_code(await c.post("/v1/completions", json={"model": "q"})) == (
                502,
                "upstream_error",
            )
            # never forwarded, but it started: SPEC 6.2 reports its end with the error code
            start = events.get_nowait()
            end = events.get_nowait()
            assert start is not None
            assert start["type"] == "request_start"
            assert end is not None
            assert end["type"] == "request"
            assert (end["id"], end["status"], end["error"]) == (start["id"], 502, "upstream_error")
            assert events.get_nowait() is None
        assert h.forward.calls == []


async def test_forward_errors_before_the_head_are_rendered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:

        async def refused(*args: object, **kw: object) -> object:
            raise errors.gateway_timeout("q", "no response head within 5s")

        monkeypatch.setattr("llama_swap_trio.http.app.forward_http", refused)
        with h.kit.bus.subscribe() as events:
            response = await h.client.post("/v1/completions", json={"model": "q"})
            assert envelope_code(response) == (504, "gateway_timeout")
            with trio.fail_after(5):
                while (event := await events.get())["type"] != "request":
                    pass
        assert (event["status"], event["ttfb_ms"], event["error"]) == (504, None, "gateway_timeout")
        # the grant was released: nothing stays in flight
        assert h.router.in_flight["q"] == 0


async def test_text_plain_clients_get_text_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.post(
            "/v1/chat/completions", json={"model": "zz"}, headers={"accept": "text/plain"}
        )
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "llama-swap-trio: model 'zz' not found\n"


async def test_shutting_down_refuses_new_model_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = Daemonish(stopping=True)
    async with harness(config(model("q")), monkeypatch, kit) as h:
        response = await h.client.post("/v1/chat/completions", json={"model": "q"})
        assert envelope_code(response) == (503, "shutting_down")
        assert response.headers["retry-after"] == "1"
        load = await h.client.post("/api/models/load/q")
        assert envelope_code(load) == (503, "shutting_down")
        assert envelope_code(await h.client.get("/upstream/q/v1/models")) == (503, "shutting_down")
        assert (await h.client.get("/health")).status_code == 200
        assert h.router.serve_calls == []


async def test_declared_huge_body_gets_413_without_being_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        host, port = h.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\ncontent-length: 200000000\r\n\r\n"
                b'{"model": "q"'
            )
            received = b""
            with trio.fail_after(5):
                while b"request_too_large" not in received:
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    received += chunk
        assert received.startswith(b"HTTP/1.1 413")
        assert b"request_too_large" in received
        assert h.router.serve_calls == []


async def test_chunked_body_over_the_limit_gets_413(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_swap_trio.http import request

    monkeypatch.setattr(request.read_body, "__defaults__", (1000,))
    async with harness(config(model("q")), monkeypatch) as h:

        async def body():  # type: ignore[no-untyped-def]
            yield b'{"model": "q", "pad": "'
            for _ in range(20):
                yield b"x" * 100

        response = await h.client.post("/v1/chat/completions", content=body())
        assert envelope_code(response) == (413, "request_too_large")
