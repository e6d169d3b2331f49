"""The request path's JSON decoding gives exactly ``json.loads``'s values and errors."""

from __future__ import annotations

import json

import pytest

from llama_swap_trio.http import json_fast

# What msgspec decodes itself, and what it refuses but json.loads accepts (the fallback).
ACCEPTED = [
    b'{"model":"qwen","stream":true,"messages":[{"role":"user","content":"hi"}]}',
    b'{"a":123456789012345678901234567890,"b":-0,"c":-0.0,"d":1E5,"e":0.1}',
    b'{"a":1,"a":2}',
    b' {"a":"\\u0000 \\u00e9 \\ud83d\\ude00"} ',
    b'[1, {"usage": {"prompt_tokens": 3}}]',
    # msgspec refuses these; json.loads accepts them
    b'{"a":NaN,"b":Infinity,"c":-Infinity}',
    b'{"a":1e400}',
    b'{"a":"\\ud800"}',
    b'\xef\xbb\xbf{"a":1}',
    '{"a":"é"}'.encode("utf-16"),
]
REFUSED = [b"", b"{", b'{"a":}', b"\xff\xfe\x00", b'{"a":"\xff"}', b"[" * 100_000]


@pytest.mark.parametrize("data", ACCEPTED)
def test_the_value_is_the_standard_librarys(data: bytes) -> None:
    got, want = json_fast.loads(data), json.loads(data)
    assert repr(got) == repr(want)  # repr: NaN != NaN, and -0.0 == 0 would hide a difference
    assert type(got) is type(want)


@pytest.mark.parametrize("data", REFUSED)
def test_the_error_is_the_standard_librarys(data: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as want:
        json.loads(data)
    with pytest.raises(want.type) as got:
        json_fast.loads(data)
    assert str(got.value) == str(want.value)
