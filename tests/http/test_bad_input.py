"""Bad input found when tried (SPEC 6.1): each is answered, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.http.appkit import config, filters, harness, model

#: a JSON body that ``json.loads`` accepts although its string holds a lone surrogate
SURROGATE_BODY = b'{"model": "q", "messages": [{"role": "user", "content": "a\\ud800b"}]}'


async def test_a_lone_surrogate_in_the_model_name_is_a_404_also_as_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(config(model("q")), monkeypatch) as h:
        body = b'{"model": "\\ud800"}'
        as_json = await h.client.post("/v1/chat/completions", content=body)
        assert as_json.status_code == 404
        assert as_json.json()["error"]["code"] == "model_not_found"
        as_text = await h.client.post(
            "/v1/chat/completions", content=body, headers={"accept": "text/plain"}
        )
        assert as_text.status_code == 404
        assert as_text.text.startswith("llama-swap-trio: model '\\ud800' not found")


@pytest.mark.parametrize(
    "knobs",
    [
        {"use_model_name": "served-name"},
        {"filters": filters(set_params={"temperature": 0.5})},
        {"filters": filters(strip_params=("messages",))},
    ],
    ids=["use_model_name", "set_params", "strip_params"],
)
async def test_a_lone_surrogate_survives_a_rewritten_body(
    monkeypatch: pytest.MonkeyPatch, knobs: dict[str, object]
) -> None:
    async with harness(config(model("q", **knobs)), monkeypatch) as h:
        response = await h.client.post("/v1/chat/completions", content=SURROGATE_BODY)
        assert response.status_code == 200
        (call,) = h.forward.calls
        forwarded = json.loads(call.body)  # still valid JSON, the surrogate escaped as sent
        sent = json.loads(SURROGATE_BODY)
        if "messages" in forwarded:
            assert forwarded["messages"] == sent["messages"]
        assert forwarded != sent  # it was rewritten
        assert dict(call.headers)[b"content-length"] == str(len(call.body)).encode()
