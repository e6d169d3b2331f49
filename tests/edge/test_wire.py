"""HTTP/1.1 wire format (edge/wire.py): which request heads the front door serves, and the
forwarding client's response parsing and body framing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_swap_trio.edge.wire import (
    BodyReader,
    Framing,
    ProtocolError,
    parse_request_head,
    parse_response_head,
)

PLAIN = (
    b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
    b"Host: localhost:8080\r\n"
    b"Content-Type:  application/json \r\n"
    b"Content-Length: 12\r\n"
    b"X-Odd: \xe9t\xe9 value\r\n"
    b"Authorization: Bearer sk-1"
)


def test_a_plain_request_head_is_parsed_as_hypercorn_would_present_it() -> None:
    head = parse_request_head(PLAIN)
    assert head is not None
    assert head.method == "POST"
    assert head.raw_path == b"/v1/chat/completions"
    assert head.query_string == b"x=1"
    assert head.content_length == 12
    assert head.close is False
    # names lower-cased, values without surrounding whitespace, obs-text kept
    assert head.headers == [
        (b"host", b"localhost:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"x-odd", b"\xe9t\xe9 value"),
        (b"authorization", b"Bearer sk-1"),
    ]


def test_connection_close_is_noted() -> None:
    head = parse_request_head(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close")
    assert head is not None
    assert head.close
    assert head.content_length == 0


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET /health HTTP/1.0\r\nHost: a", id="http-1.0"),
        pytest.param(b"GET http://a/health HTTP/1.1\r\nHost: a", id="absolute-form"),
        pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: a", id="asterisk-form"),
        pytest.param(b"get /health HTTP/1.1\r\nHost: a", id="lower-case-method"),
        pytest.param(b"GET /a b HTTP/1.1\r\nHost: a", id="space-in-target"),
        pytest.param(b"GET /\xff HTTP/1.1\r\nHost: a", id="non-ascii-target"),
        pytest.param(b"GET / HTTP/1.1", id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", id="two-hosts"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked", id="chunked"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue", id="expect"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket", id="upgrade"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade", id="connection-upgrade"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1", id="cl-list"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1", id="cl-twice"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1", id="cl-negative"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1" + b"0" * 18, id="cl-huge"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n folded", id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x", id="space-in-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb", id="bare-lf"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b", id="nul-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n: x", id="empty-name"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM", id="h2-preface"),
    ],
)
def test_anything_unusual_is_left_to_hypercorn(head: bytes) -> None:
    assert parse_request_head(head) is None


# -- responses -------------------------------------------------------------------------------------


def test_response_head_framing() -> None:
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b", "POST")
    assert (head.status, head.framing, head.length, head.keep_alive) == (
        200,
        Framing.LENGTH,
        5,
        True,
    )
    assert head.headers == [(b"Content-Length", b"5"), (b"X-A", b"b")]  # spelling kept
    chunked = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", "GET")
    assert chunked.framing == Framing.CHUNKED
    assert chunked.keep_alive
    assert parse_response_head(b"HTTP/1.1 200 OK", "GET").framing == Framing.CLOSE
    assert not parse_response_head(b"HTTP/1.1 200 OK", "GET").keep_alive
    assert parse_response_head(b"HTTP/1.1 204 No Content", "GET").framing == Framing.NONE
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9", "HEAD").framing == (
        Framing.NONE
    )
    assert not parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1", "GET").keep_alive
    closing = parse_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1", "GET"
    )
    assert not closing.keep_alive
    # both framings: chunked wins and the connection is not reused
    both = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", "GET"
    )
    assert both.framing == Framing.CHUNKED
    assert not both.keep_alive
    assert parse_response_head(b"HTTP/1.1 200", "GET").status == 200  # no reason phrase
    same = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2", "GET")
    assert same.length == 2


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 200 OK\r\nX-A: b\r\n c",
        b"HTTP/1.1 200 OK\r\nX-A: b\rc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
        b"HTTP/1.1 200 OK\r\nContent-Length: x",
        b"garbage",
    ],
)
def test_malformed_response_heads_are_protocol_errors(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(head, "GET")


CHUNKED_BODY = b"7\r\ndata: 1\r\nA;ext=1\r\n0123456789\r\n1\r\nx\r\n0\r\nTrailer-A: 1\r\n\r\n"


def _reader(raw_head: bytes) -> BodyReader:
    return BodyReader(parse_response_head(raw_head, "GET"))


def _decode(reader: BodyReader, pieces: list[bytes]) -> bytes:
    out = b""
    for piece in pieces:
        out += b"".join(reader.feed(piece))
    return out


@given(st.lists(st.integers(min_value=0, max_value=len(CHUNKED_BODY)), max_size=8))
def test_chunked_body_decodes_the_same_however_the_bytes_are_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(CHUNKED_BODY)]
    pieces = [CHUNKED_BODY[a:b] for a, b in itertools.pairwise(points)]
    reader = _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    assert _decode(reader, pieces) == b"data: 10123456789x"
    assert reader.done
    assert not reader.extra


def test_chunked_data_is_passed_on_before_its_chunk_is_complete() -> None:
    reader = _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    assert reader.feed(b"10\r\n01234") == [b"01234"]
    assert reader.feed(b"56789") == [b"56789"]  # the middle of a chunk: passed on as it came
    assert reader.feed(b"abcdef\r\n0\r\n\r\n") == [b"abcdef"]
    assert reader.done


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n",  # not hex
        b"2\r\nabXY",  # data not followed by CRLF
        b"1" * 5000,  # a size line that never ends
        b"11111111111111111\r\n",  # 17 hex digits
    ],
)
def test_bad_chunk_framing_is_a_protocol_error(body: bytes) -> None:
    reader = _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    with pytest.raises(ProtocolError):
        reader.feed(body)


def test_bytes_after_the_end_of_a_body_are_noticed() -> None:
    reader = _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    reader.feed(b"0\r\n\r\nHTTP/1.1 200 OK")
    assert reader.done
    assert reader.extra
    sized = _reader(b"HTTP/1.1 200 OK\r\nContent-Length: 3")
    assert sized.feed(b"abcdef") == [b"abc"]
    assert sized.done
    assert sized.extra


def test_content_length_body_and_early_close() -> None:
    reader = _reader(b"HTTP/1.1 200 OK\r\nContent-Length: 6")
    assert reader.feed(b"abc") == [b"abc"]
    assert not reader.done
    with pytest.raises(ProtocolError):
        reader.eof()
    assert reader.feed(b"def") == [b"def"]
    assert reader.done
    assert _reader(b"HTTP/1.1 200 OK\r\nContent-Length: 0").done


def test_a_body_delimited_by_close_ends_at_eof() -> None:
    reader = _reader(b"HTTP/1.1 200 OK")
    assert reader.feed(b"abc") == [b"abc"]
    reader.eof()
    assert reader.done
    chunked = _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    chunked.feed(b"3\r\nab")
    with pytest.raises(ProtocolError):
        chunked.eof()


def test_a_read_that_is_exactly_one_chunk_is_decoded_and_bad_ones_still_fail() -> None:
    reader = _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    assert reader.feed(b"5\r\nhello\r\n") == [b"hello"]
    assert reader.feed(b"A\r\n0123456789\r\n") == [b"0123456789"]
    assert reader.feed(b"0\r\n\r\n") == []
    assert reader.done
    for bad in (b"+5\r\nhello\r\n", b"0x5\r\nhello\r\n", b"5\r\nhelloXY"):
        with pytest.raises(ProtocolError):
            _reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").feed(bad)
