"""Request parsing: the bounded body read, the model per SPEC 3.1, the /upstream prefix match."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.request import (
    MAX_BODY_BYTES,
    ClientDisconnected,
    UpstreamTarget,
    extract_model,
    find_form_field,
    match_upstream,
    read_body,
)
from tests.http.appkit import config, model

BOUNDARY = "XyZ123"


def scope(
    content_type: str | None = None,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    path: str = "/v1/chat/completions",
    raw_path: bytes | None = None,
) -> dict[str, Any]:
    hs = list(headers or [])
    if content_type is not None:
        hs.append((b"content-type", content_type.encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": query,
        "headers": hs,
    }


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def code_of(excinfo: pytest.ExceptionInfo[ProxyError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.code


# -- body ------------------------------------------------------------------------------------------


def receiver(*messages: dict[str, Any]) -> Any:
    pending = list(messages)
    read: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = pending.pop(0)
        read.append(message)
        return message

    receive.read = read  # type: ignore[attr-defined]
    return receive


async def test_body_chunks_are_joined() -> None:
    receive = receiver(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    )
    assert await read_body(scope(), receive) == b"abcd"


async def test_declared_length_over_limit_is_refused_before_reading() -> None:
    receive = receiver({"type": "http.request", "body": b"x", "more_body": False})
    big = scope(headers=[(b"content-length", str(MAX_BODY_BYTES + 1).encode())])
    with pytest.raises(ProxyError) as excinfo:
        await read_body(big, receive)
    assert code_of(excinfo) == (413, "request_too_large")
    assert receive.read == []


async def test_undeclared_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    chunk = {"type": "http.request", "body": b"x" * 40, "more_body": True}
    receive = receiver(
        chunk, chunk, chunk, {"type": "http.request", "body": b"", "more_body": False}
    )
    with pytest.raises(ProxyError) as excinfo:
        await read_body(scope(), receive, limit=100)
    assert code_of(excinfo) == (413, "request_too_large")
    assert len(receive.read) == 3


async def test_disconnect_while_reading_the_body_is_reported() -> None:
    receive = receiver(
        {"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}
    )
    with pytest.raises(ClientDisconnected):
        await read_body(scope(), receive)


async def test_body_read_is_cancellable() -> None:
    async def never() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    with trio.move_on_after(0.01) as cancel_scope:
        await read_body(scope(), never)
    assert cancel_scope.cancelled_caught


# -- JSON ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON"],
)
def test_json_model_is_read_with_or_without_content_type(content_type: str | None) -> None:
    parsed = extract_model(scope(content_type), b'{"model": "qwen", "stream": true}')
    assert (parsed.model, parsed.source, parsed.stream) == ("qwen", "json", True)
    assert parsed.json_body == {"model": "qwen", "stream": True}


def test_stream_must_be_the_json_boolean_true() -> None:
    assert not extract_model(scope(), b'{"model": "q", "stream": "true"}').stream
    assert not extract_model(scope(), b'{"model": "q"}').stream


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", (400, "model_required")),
        (b"   ", (400, "model_required")),
        (b"{}", (400, "model_required")),
        (b'{"model": ""}', (400, "model_required")),
        (b'{"model": null}', (400, "model_required")),
        (b'{"model": "q"', (400, "invalid_json")),
        (b"\xff\xfe{", (400, "invalid_json")),
        (b"[" * 100000 + b"]" * 100000, (400, "invalid_json")),
        (b'["model"]', (400, "invalid_request")),
        (b'"qwen"', (400, "invalid_request")),
        (b"42", (400, "invalid_request")),
        (b'{"model": 42}', (400, "invalid_request")),
        (b'{"model": ["q"]}', (400, "invalid_request")),
    ],
)
def test_bad_json_bodies_are_refused_with_the_spec_codes(
    body: bytes, expected: tuple[int, str]
) -> None:
    with pytest.raises(ProxyError) as excinfo:
        extract_model(scope("application/json"), body)
    assert code_of(excinfo) == expected


def test_query_model_is_the_fallback_for_a_json_body_without_model() -> None:
    parsed = extract_model(scope(None, query=b"model=qwen"), b'{"prompt": "hi"}')
    assert (parsed.model, parsed.source) == ("qwen", "query")
    assert parsed.json_body == {"prompt": "hi"}


def test_invalid_json_is_refused_even_when_the_query_names_a_model() -> None:
    with pytest.raises(ProxyError) as excinfo:
        extract_model(scope(None, query=b"model=qwen"), b"{nope")
    assert code_of(excinfo) == (400, "invalid_json")


def test_get_with_query_model_and_no_body() -> None:
    parsed = extract_model(scope(None, query=b"a=1&model=org%2Fm%3Aq4"), b"")
    assert (parsed.model, parsed.source) == ("org/m:q4", "query")


def test_other_content_types_are_not_parsed_but_the_query_still_works() -> None:
    with pytest.raises(ProxyError) as excinfo:
        extract_model(scope("text/plain"), b'{"model": "qwen"}')
    assert code_of(excinfo) == (400, "model_required")
    assert extract_model(scope("text/plain", query=b"model=q"), b"x").model == "q"


# -- forms -----------------------------------------------------------------------------------------


def test_multipart_model_field_is_read() -> None:
    body = multipart(("file", "a.wav", b"RIFF\r\n--not-a-boundary"), ("model", None, b"whisper"))
    parsed = extract_model(scope(f"multipart/form-data; boundary={BOUNDARY}"), body)
    assert (parsed.model, parsed.source, parsed.boundary) == ("whisper", "multipart", b"XyZ123")


def test_multipart_boundary_may_be_quoted() -> None:
    body = multipart(("model", None, b"whisper"))
    parsed = extract_model(scope(f'multipart/form-data; boundary="{BOUNDARY}"'), body)
    assert parsed.model == "whisper"


def test_multipart_file_named_model_is_not_the_model_field() -> None:
    body = multipart(("model", "model.bin", b"weights"))
    with pytest.raises(ProxyError) as excinfo:
        extract_model(scope(f"multipart/form-data; boundary={BOUNDARY}"), body)
    assert code_of(excinfo) == (400, "model_required")


def test_multipart_without_model_falls_back_to_the_query() -> None:
    body = multipart(("file", "a.wav", b"data"))
    parsed = extract_model(scope(f"multipart/form-data; boundary={BOUNDARY}", b"model=w"), body)
    assert (parsed.model, parsed.source) == ("w", "query")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", multipart(("model", None, b"w"))),
        (f"multipart/form-data; boundary={BOUNDARY}", b"garbage"),
        (f"multipart/form-data; boundary={BOUNDARY}", multipart(("model", None, b"w"))[:-12]),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        ),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=model".encode(),
        ),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            multipart(("model", None, b"\xff\xfe")),
        ),
    ],
)
def test_bad_multipart_bodies_are_invalid_requests(content_type: str, body: bytes) -> None:
    with pytest.raises(ProxyError) as excinfo:
        extract_model(scope(content_type), body)
    assert code_of(excinfo) == (400, "invalid_request")


def test_multipart_field_span_points_at_the_value() -> None:
    body = multipart(("prompt", None, b"hello"), ("model", None, b"whisper-1"))
    start, end = find_form_field(body, BOUNDARY.encode(), b"model") or (0, 0)
    assert body[start:end] == b"whisper-1"


def test_urlencoded_form_model_is_read() -> None:
    parsed = extract_model(scope("application/x-www-form-urlencoded"), b"a=1&model=tts%2D1")
    assert (parsed.model, parsed.source) == ("tts-1", "form")


def test_json_sent_with_curls_default_form_content_type_is_read_as_json() -> None:
    # `curl -d '{"model": ...}'` labels its body application/x-www-form-urlencoded.
    body = b'{"model": "qwen", "stream": true}'
    parsed = extract_model(scope("application/x-www-form-urlencoded"), body)
    assert (parsed.model, parsed.source, parsed.stream) == ("qwen", "json", True)


def test_urlencoded_form_that_is_not_ascii_is_invalid() -> None:
    with pytest.raises(ProxyError) as excinfo:
        extract_model(scope("application/x-www-form-urlencoded"), b"model=\xff")
    assert code_of(excinfo) == (400, "invalid_request")


# -- /upstream -------------------------------------------------------------------------------------


def upstream_scope(raw: str) -> dict[str, Any]:
    return scope(path=raw, raw_path=raw.encode())


def test_longest_prefix_naming_a_model_wins() -> None:
    cfg = config(model("author"), model("author/model"))
    match = match_upstream(cfg, upstream_scope("/upstream/author/model/v1/chat"))
    assert isinstance(match, UpstreamTarget)
    assert (match.model.id, match.raw_rest) == ("author/model", "/v1/chat")
    match = match_upstream(cfg, upstream_scope("/upstream/author/v1/chat"))
    assert isinstance(match, UpstreamTarget)
    assert (match.model.id, match.raw_rest) == ("author", "/v1/chat")


def test_remaining_path_keeps_its_percent_encoding() -> None:
    cfg = config(model("author/model"))
    match = match_upstream(cfg, upstream_scope("/upstream/author%2Fmodel/files/a%2Fb"))
    assert isinstance(match, UpstreamTarget)
    assert (match.model.id, match.raw_name, match.raw_rest) == (
        "author/model",
        "author%2Fmodel",
        "/files/a%2Fb",
    )


def test_alias_names_a_model_in_the_path_and_no_trailing_path_is_empty_rest() -> None:
    cfg = config(model("qwen", aliases=("gpt",)))
    match = match_upstream(cfg, upstream_scope("/upstream/gpt"))
    assert isinstance(match, UpstreamTarget)
    assert (match.model.id, match.raw_name, match.raw_rest) == ("qwen", "gpt", "")


def test_unknown_model_in_the_path_gives_its_first_segment() -> None:
    assert match_upstream(config(model("q")), upstream_scope("/upstream/nope/v1")) == "nope"
