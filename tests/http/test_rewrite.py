"""Body rewriting: use_model_name, strip_params, set_params, set_params_by_id, Content-Length."""

from __future__ import annotations

import json
from typing import Any

from llama_swap_trio.http.request import extract_model
from llama_swap_trio.http.rewrite import rewrite_request
from tests.http.appkit import filters, model
from tests.http.test_request import BOUNDARY, multipart, scope


def rewrite(body: Any, m: Any, content_type: str | None = "application/json", query: bytes = b""):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-length", str(len(raw)).encode())]
    s = scope(content_type, query=query, headers=headers)
    parsed = extract_model(s, raw)
    return rewrite_request(s, raw, parsed, m)


def content_length(scope: dict[str, Any]) -> int:
    values = [int(v) for k, v in scope["headers"] if k == b"content-length"]
    assert len(values) == 1
    return values[0]


def test_untouched_body_is_forwarded_byte_for_byte() -> None:
    raw = b'{ "model" : "qwen",   "messages": [] }'
    out = rewrite(raw, model("qwen"))
    assert out.body is raw
    assert out.target is None


def test_alias_is_not_rewritten_without_use_model_name() -> None:
    raw = b'{"model": "gpt"}'
    assert rewrite(raw, model("qwen", aliases=("gpt",))).body is raw


def test_use_model_name_rewrites_model_and_content_length() -> None:
    out = rewrite({"model": "gpt", "x": 1}, model("qwen", use_model_name="org/qwen-7b"))
    assert json.loads(out.body) == {"model": "org/qwen-7b", "x": 1}
    assert content_length(out.scope) == len(out.body)


def test_strip_params_removes_keys_but_never_model() -> None:
    m = model("q", filters=filters(strip_params=("temperature", "model", "absent")))
    out = rewrite({"model": "q", "temperature": 2, "top_p": 1}, m)
    assert json.loads(out.body) == {"model": "q", "top_p": 1}
    assert content_length(out.scope) == len(out.body)


def test_set_params_sets_keys_but_never_model() -> None:
    m = model("q", filters=filters(set_params={"temperature": 0.5, "model": "evil", "n": [1]}))
    out = rewrite({"model": "q", "temperature": 2}, m)
    assert json.loads(out.body) == {"model": "q", "temperature": 0.5, "n": [1]}


def test_set_params_by_id_applies_for_the_requested_name_and_wins() -> None:
    m = model(
        "q",
        filters=filters(
            strip_params=("temperature",),
            set_params={"temperature": 0.5, "top_k": 10},
            set_params_by_id={"q:hot": {"temperature": 1.5}, "q": {"top_k": 1}},
        ),
    )
    hot = rewrite({"model": "q:hot", "temperature": 9}, m)
    assert json.loads(hot.body) == {"model": "q:hot", "temperature": 1.5, "top_k": 10}
    plain = rewrite({"model": "q", "temperature": 9}, m)
    assert json.loads(plain.body) == {"model": "q", "temperature": 0.5, "top_k": 1}


def test_strip_then_set_of_the_same_key_sets_it() -> None:
    m = model("q", filters=filters(strip_params=("seed",), set_params={"seed": 1}))
    assert json.loads(rewrite({"model": "q", "seed": 7}, m).body)["seed"] == 1


def test_setting_an_equal_value_leaves_the_body_untouched() -> None:
    raw = b'{"model": "q", "temperature": 0.5}'
    m = model("q", filters=filters(set_params={"temperature": 0.5}))
    assert rewrite(raw, m).body is raw


def test_setting_true_over_one_is_a_change() -> None:
    m = model("q", filters=filters(set_params={"flag": True}))
    assert json.loads(rewrite({"model": "q", "flag": 1}, m).body)["flag"] is True


def test_dotted_keys_address_nested_objects() -> None:
    m = model(
        "q",
        filters=filters(
            strip_params=("options.seed",),
            set_params={"chat_template_kwargs.enable_thinking": False},
        ),
    )
    body = {"model": "q", "options": {"seed": 1, "k": 2}, "chat_template_kwargs": {"x": 1}}
    out = json.loads(rewrite(body, m).body)
    assert out["options"] == {"k": 2}
    assert out["chat_template_kwargs"] == {"x": 1, "enable_thinking": False}


def test_nested_set_never_edits_the_config() -> None:
    m = model("q", filters=filters(set_params={"opts": {"a": 1}, "opts.b": 2}))
    assert json.loads(rewrite({"model": "q"}, m).body)["opts"] == {"a": 1, "b": 2}
    assert m.filters.set_params["opts"] == {"a": 1}


def test_non_ascii_text_survives_a_rewrite() -> None:
    m = model("q", filters=filters(set_params={"n": 1}))
    out = rewrite({"model": "q", "prompt": "héllo ✓"}, m)
    assert json.loads(out.body)["prompt"] == "héllo ✓"
    assert content_length(out.scope) == len(out.body)


def test_use_model_name_rewrites_the_multipart_model_field_only() -> None:
    raw = multipart(("file", "a.wav", b"RIFF model"), ("model", None, b"whisper"))
    m = model("whisper", use_model_name="whisper-large-v3")
    out = rewrite(raw, m, f"multipart/form-data; boundary={BOUNDARY}")
    assert out.body == raw.replace(b"\r\nwhisper\r\n", b"\r\nwhisper-large-v3\r\n")
    assert content_length(out.scope) == len(out.body)


def test_use_model_name_rewrites_an_urlencoded_form() -> None:
    out = rewrite(
        b"a=1&model=x&b=2", model("x", use_model_name="y"), "application/x-www-form-urlencoded"
    )
    assert out.body == b"a=1&model=y&b=2"


def test_use_model_name_rewrites_the_query_model_into_the_target() -> None:
    out = rewrite(b"", model("x", use_model_name="org/y"), None, query=b"model=x&z=1")
    assert out.target == "/v1/chat/completions?model=org%2Fy&z=1"
    assert out.body == b""


def test_filters_do_not_apply_to_forms() -> None:
    raw = b"model=x&temperature=1"
    m = model("x", filters=filters(strip_params=("temperature",)))
    assert rewrite(raw, m, "application/x-www-form-urlencoded").body is raw
