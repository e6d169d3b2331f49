"""Profiles API, pins and selectors in the app (SPEC 6.6), with a fake router and forward."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llama_swap_trio.config import load_config_text
from tests.http.appkit import harness

CONFIG = """
[models.a]
cmd = "srv --port ${PORT}"
aliases = ["chat"]
[models.b]
cmd = "srv --port ${PORT}"
filters = { set_params_by_id = { "b:hot" = { temperature = 2 } } }
[profiles.p]
description = "b for chat"
pins = { chat = "b", extra = "b:hot", off = "", pick = "sel" }
[selectors.sel]
strategy = "pin"
targets = ["b", "a"]
"""


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": []}


async def test_profiles_api_in_llama_swap_form_too(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(load_config_text(CONFIG), monkeypatch) as h:
        c = h.client
        assert (await c.put("/api/profiles/active", json={"name": "p"})).json() == {
            "msg": "ok",
            "active": "p",
        }
        assert (await c.get("/api/profiles")).json()["active"] == "p"
        assert (await c.put("/api/profiles/active", json={"name": None})).json()["active"] is None
        bad = await c.put("/api/profiles/active", json={"name": 3})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
        missing = await c.put("/api/profiles/active", json={"name": "nope"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        wrong = await c.delete("/api/profiles/p")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
        assert (await c.get("/api/profiles")).json()["active"] is None


async def test_pins_rewrite_the_name_and_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(load_config_text(CONFIG), monkeypatch) as h:
        c = h.client
        await c.post("/api/profiles/p")
        answer = (await c.post("/v1/chat/completions", json=chat("extra"))).json()
        assert answer["model"] == "b"
        sent = json.loads(answer["body"])
        # the body names the pin's target, and set_params_by_id of that name applied
        assert sent == {"model": "b:hot", "messages": [], "temperature": 2}
        picked = (await c.post("/v1/chat/completions", json=chat("pick"))).json()
        assert picked["model"] == "b"  # pin -> selector -> its first target
        assert (await c.post("/v1/chat/completions", json=chat("off"))).status_code == 404
        listed = {m["id"]: m for m in (await c.get("/v1/models")).json()["data"]}
        assert listed["extra"]["meta"] == {"profile": "p", "pin_of": "b:hot"}
        assert "off" not in listed  # pinned to "": not listed
        assert "chat" not in listed  # an alias already: no pin record
        await c.delete("/api/profiles/active")
        listed = {m["id"] for m in (await c.get("/v1/models")).json()["data"]}
        assert "extra" not in listed


async def test_selectors_are_not_valid_on_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(load_config_text(CONFIG), monkeypatch) as h:
        answer = await h.client.get("/upstream/sel/health")
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "model_not_found")
