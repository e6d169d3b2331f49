"""Heavy JSON bodies are read by a helper process, with the answers a small body gets."""

from __future__ import annotations

import json

import pytest
import trio

from llama_swap_trio.http import heavy_body
from llama_swap_trio.http.heavy_body import is_heavy, parse_heavy
from tests.http.appkit import config, filters, harness, model

JSON = {"headers": [(b"content-type", b"application/json")], "query_string": b""}


@pytest.fixture
def everything_heavy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test bodies take the helper's path."""
    monkeypatch.setattr(heavy_body, "SMALL_BODY", 0)
    monkeypatch.setattr(heavy_body, "INLINE_BUDGET_US", -1.0)


def test_a_chat_request_stays_inline_and_a_body_of_tiny_values_does_not() -> None:
    chat = json.dumps({"model": "q", "messages": [{"role": "user", "content": "hi" * 400}]})
    assert not is_heavy(JSON, chat.encode())
    long_chat = {"model": "q", "messages": [{"role": "user", "content": "x" * 500_000}]}
    assert not is_heavy(JSON, json.dumps(long_chat).encode())  # long strings parse fast
    tiny = b'{"model": "q", "x": [' + b"{}," * 100_000 + b"{}]}"
    assert is_heavy(JSON, tiny)
    form = {"headers": [(b"content-type", b"multipart/form-data; boundary=b")]}
    assert not is_heavy(form, tiny)  # only JSON bodies are parsed as JSON


@pytest.mark.usefixtures("everything_heavy")
async def test_a_heavy_body_is_routed_and_forwarded_as_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b'{"messages": [{}, {}], "model":"gpt" ,"stream": false, "x": "\\u00e9"}'
    async with harness(config(model("qwen", aliases=("gpt",))), monkeypatch) as h:
        response = await h.client.post("/v1/chat/completions", content=body)
        assert response.status_code == 200
        (call,) = h.forward.calls
        assert call.body == body  # byte for byte


@pytest.mark.usefixtures("everything_heavy")
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[{}, {}]", "invalid_request"),
        (b'{"model": "q", "x": [1,,2]}', "invalid_json"),
        (b'{"model": 5}', "invalid_request"),
        (b'{"messages": []}', "model_required"),
    ],
)
async def test_a_heavy_body_is_refused_as_a_small_one_is(
    monkeypatch: pytest.MonkeyPatch, body: bytes, code: str
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        response = await h.client.post("/v1/chat/completions", content=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code
        assert h.router.serve_calls == []


@pytest.mark.usefixtures("everything_heavy")
async def test_json_loads_semantics_hold_where_msgspec_is_stricter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        for body in (b'{"model": "q", "x": "\\ud800"}', b'{"model": "q", "x": NaN}'):
            response = await h.client.post("/v1/chat/completions", content=body)
            assert response.status_code == 200, body
        by_query = await h.client.post("/v1/chat/completions?model=q", content=b'{"a": 1}')
        assert by_query.status_code == 200


@pytest.mark.usefixtures("everything_heavy")
async def test_a_heavy_body_is_rewritten_as_a_small_one_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    knobs = {
        "use_model_name": "served",
        "filters": filters(
            strip_params=("top_p", "kwargs.drop"),
            set_params={"temperature": 0.5, "kwargs.enable_thinking": False},
            set_params_by_id={"q": {"seed": 7}},
        ),
    }
    body = {"model": "q", "top_p": 1, "kwargs": {"drop": 1, "keep": 2}, "messages": [{}]}
    async with harness(config(model("q", **knobs)), monkeypatch) as h:
        assert (await h.client.post("/v1/chat/completions", json=body)).status_code == 200
        heavy = json.loads(h.forward.calls[0].body)
    monkeypatch.undo()  # the same request, inline
    async with harness(config(model("q", **knobs)), monkeypatch) as h:
        assert (await h.client.post("/v1/chat/completions", json=body)).status_code == 200
        inline = json.loads(h.forward.calls[0].body)
    assert (
        heavy
        == inline
        == {
            "model": "served",
            "kwargs": {"keep": 2, "enable_thinking": False},
            "messages": [{}],
            "temperature": 0.5,
            "seed": 7,
        }
    )


async def test_reading_a_heavy_body_does_not_hold_the_event_loop() -> None:
    body = b'{"x": [' + b"{}," * 5_000_000 + b'{}], "model": "q", "stream": true}'  # 15 MB
    assert is_heavy(JSON, body)
    longest = 0.0
    done = trio.Event()

    async def probe() -> None:
        nonlocal longest
        while not done.is_set():
            before = trio.current_time()
            await trio.sleep(0.005)
            longest = max(longest, trio.current_time() - before - 0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        with trio.fail_after(60):
            parsed = await parse_heavy(JSON, body)
        done.set()
    assert (parsed.model, parsed.stream) == ("q", True)
    # json.loads would hold the loop for seconds here; the pipe writes take milliseconds
    assert longest < 0.5
