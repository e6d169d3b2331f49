"""UsageSniffer: token figures from JSON and SSE bodies fed in arbitrary chunks."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from llama_swap_trio.http.usage import MAX_JSON_BYTES, MAX_SSE_LINE, Usage, UsageSniffer


def feed_split(sniffer: UsageSniffer, body: bytes, cuts: list[int]) -> Usage:
    points = sorted({c % (len(body) + 1) for c in cuts})
    start = 0
    for point in [*points, len(body)]:
        sniffer.feed(body[start:point])
        start = point
    return sniffer.result()


def sse_body(*events: object) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )


OPENAI_STREAM = sse_body(
    {"choices": [{"delta": {"content": "Hi"}}]},
    {"choices": [{"delta": {"content": " there"}}]},
    {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}},
)


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_sse_usage_survives_any_chunking(cuts: list[int]) -> None:
    usage = feed_split(UsageSniffer("text/event-stream; charset=utf-8"), OPENAI_STREAM, cuts)
    assert usage == Usage(prompt_tokens=11, completion_tokens=2)


def test_sse_usage_split_byte_by_byte_with_crlf() -> None:
    body = OPENAI_STREAM.replace(b"\n", b"\r\n")
    sniffer = UsageSniffer("text/event-stream")
    for i in range(len(body)):
        sniffer.feed(body[i : i + 1])
    assert sniffer.result() == Usage(11, 2)


def test_sse_llama_server_timings_override_usage() -> None:
    body = sse_body(
        {"choices": [{"delta": {"content": "x"}}]},
        {
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            "timings": {"prompt_n": 40, "predicted_n": 12, "predicted_per_second": 33.5},
        },
    )
    assert feed_split(UsageSniffer("text/event-stream"), body, [17, 50]) == Usage(40, 12, 33.5)


def test_sse_anthropic_usage_merges_start_and_delta() -> None:
    body = sse_body(
        {"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}},
        {"type": "content_block_delta", "delta": {"text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 15}},
    )
    assert feed_split(UsageSniffer("text/event-stream"), body, [30, 31, 90]) == Usage(25, 15)


def test_sse_final_line_without_newline_is_read() -> None:
    sniffer = UsageSniffer("text/event-stream")
    sniffer.feed(b'data: {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}')
    assert sniffer.result() == Usage(3, 4)


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
def test_json_usage_any_chunking(cuts: list[int]) -> None:
    body = json.dumps(
        {
            "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4},
        }
    ).encode()
    assert feed_split(UsageSniffer("application/json"), body, cuts) == Usage(9, 4)


def test_json_anthropic_usage() -> None:
    body = json.dumps(
        {"type": "message", "usage": {"input_tokens": 8, "output_tokens": 5}}
    ).encode()
    assert feed_split(UsageSniffer("application/json"), body, [5]) == Usage(8, 5)


def test_json_infill_array_takes_last_timings() -> None:
    body = json.dumps(
        [
            {"content": "a"},
            {
                "content": "b",
                "timings": {"prompt_n": 4, "predicted_n": 6, "predicted_per_second": 10},
            },
        ]
    ).encode()
    assert feed_split(UsageSniffer("application/json"), body, []) == Usage(4, 6, 10.0)


def test_json_body_over_the_limit_is_given_up() -> None:
    sniffer = UsageSniffer("application/json")
    sniffer.feed(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "pad": "')
    sniffer.feed(b"x" * MAX_JSON_BYTES)
    sniffer.feed(b'"}')
    assert sniffer.result() == Usage()


def test_compressed_and_other_bodies_are_ignored() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
    gz = UsageSniffer("application/json", "gzip")
    gz.feed(body)
    assert gz.result() == Usage()
    audio = UsageSniffer("audio/mpeg")
    audio.feed(body)
    assert audio.result() == Usage()


def test_malformed_data_never_raises() -> None:
    sniffer = UsageSniffer("text/event-stream")
    sniffer.feed(b'data: {"usage": not json\n\ndata: {"usage": {"prompt_tokens": true}}\n\n')
    sniffer.feed(b'data: {"usage": {"prompt_tokens": -3, "completion_tokens": "x"}}\n\n')
    assert sniffer.result() == Usage()


def test_sse_usage_whose_line_starts_in_a_chunk_without_the_key_is_found() -> None:
    # given a stream whose usage line begins in a chunk that holds no "usage" key yet
    sniffer = UsageSniffer("text/event-stream")
    sniffer.feed(b'data: {"choices":[]}\n\ndata: {"choices":[],"us')
    sniffer.feed(b'age":{"prompt_tokens":4,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    # then the key split over the two chunks is still read
    usage = sniffer.result()
    assert (usage.prompt_tokens, usage.completion_tokens) == (4, 2)


def test_sse_chunks_without_usage_leave_no_line_behind() -> None:
    # given many complete token events without usage, then one with it
    sniffer = UsageSniffer("text/event-stream")
    for _ in range(100):
        sniffer.feed(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
    sniffer.feed(b'data: {"usage":{"prompt_tokens":1,"completion_tokens":100}}\n\n')
    assert sniffer.result().completion_tokens == 100


def test_sse_lines_too_long_to_hold_usage_are_skipped_and_the_next_is_read() -> None:
    sniffer = UsageSniffer("text/event-stream")
    sniffer.feed(b"data: {" + b"x" * MAX_SSE_LINE)
    sniffer.feed(b'x"usage": {"prompt_tokens": 1}}\n\n')  # the end of the long line: skipped
    sniffer.feed(b'data: {"usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n')
    assert sniffer.result() == Usage(7, 2)


def test_json_nested_past_the_parsers_depth_is_ignored_without_an_error() -> None:
    deep = b'{"usage": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    sse = UsageSniffer("text/event-stream")
    sse.feed(b"data: " + deep + b"\n\n")
    assert sse.result() == Usage(None, None)
    body = UsageSniffer("application/json")
    body.feed(deep)
    assert body.result() == Usage(None, None)


@given(st.lists(st.integers(min_value=0, max_value=200_000), max_size=6))
def test_a_long_responses_api_event_with_usage_is_read_however_it_is_split(
    cuts: list[int],
) -> None:
    # /v1/responses: the final event carries the whole answer next to its usage
    final = {
        "type": "response.completed",
        "response": {
            "output": [{"type": "message", "content": [{"text": "x" * 150_000}]}],
            "usage": {"input_tokens": 11, "output_tokens": 2222},
        },
    }
    body = b"event: response.completed\ndata: " + json.dumps(final).encode() + b"\n\n"
    usage = feed_split(UsageSniffer("text/event-stream"), body, cuts)
    assert usage == Usage(11, 2222)
