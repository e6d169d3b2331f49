"""Hostile HTTP against the real daemon: smuggling-style framing, header injection, path escapes
out of ``/upstream``, and a hypothesis fuzzer of whole requests (never a proxy 500, never a hang,
the daemon stays healthy)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap_trio.http.hygiene import has_dot_segment, strip_api_key
from tests.reliability.helpers import models_config, raw_request, status_of

SERVE = (sys.executable, "-m", "llama_swap_trio", "serve")


@pytest.fixture(scope="module")
def daemon_url() -> Iterator[str]:
    """One daemon for the module (sync, so hypothesis can drive it): models a, b and c, where
    ``a``'s base URL has a path, to catch escapes from it."""
    config = models_config({"a": (), "b": (), "c": ()}).replace(
        '[models."b"]', 'proxy = "http://127.0.0.1:${PORT}/base"\n[models."b"]'
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config)
        process = subprocess.Popen(
            [*SERVE, "--config", str(path), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        try:
            assert process.stdout is not None
            url = ""
            for line in process.stdout:
                if "listening on http://" in line:
                    url = line.split("listening on ", 1)[1].strip()
                    break
            assert url, "daemon did not start"
            yield url
            assert (
                status_of(raw_request(url, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"))
                == 200
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


def send(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    response = raw_request(url, head.replace("\n", "\r\n").encode("latin-1") + body)
    return status_of(response), response.partition(b"\r\n\r\n")[2]


# -- framing -----------------------------------------------------------------------------------


def test_content_length_with_transfer_encoding_is_rejected(daemon_url: str) -> None:
    status, body = send(
        daemon_url,
        "POST /upstream/a/x HTTP/1.1\nHost: localhost\nContent-Length: 4\n"
        "Transfer-Encoding: chunked\n\n",
        b"0\r\n\r\n",
    )
    assert status == 400
    assert b"Transfer-Encoding" in body


def test_differing_duplicate_content_lengths_are_rejected(daemon_url: str) -> None:
    head = "POST /upstream/a/x HTTP/1.1\nHost: localhost\nContent-Length: 2\nContent-Length: 3\n\n"
    assert send(daemon_url, head, b"{}")[0] == 400


def test_a_list_valued_content_length_is_rejected(daemon_url: str) -> None:
    head = "POST /upstream/a/x HTTP/1.1\nHost: localhost\nContent-Length: 2, 3\n\n"
    assert send(daemon_url, head, b"{}")[0] == 400


def test_transfer_codings_other_than_chunked_are_refused(daemon_url: str) -> None:
    head = "POST /upstream/a/x HTTP/1.1\nHost: localhost\nTransfer-Encoding: gzip, chunked\n\n"
    assert send(daemon_url, head, b"0\r\n\r\n")[0] == 501


@pytest.mark.parametrize("value", ["a\rb", "a\x00b", "a\x0bb\x7f"])
def test_control_characters_in_header_values_are_rejected(daemon_url: str, value: str) -> None:
    assert (
        send(daemon_url, f"GET /upstream/a/x HTTP/1.1\nHost: localhost\nX-A: {value}\n\n")[0] == 400
    )


def test_a_crlf_in_the_query_does_not_inject_a_header_into_the_redirect(daemon_url: str) -> None:
    response = raw_request(
        daemon_url,
        b"GET /upstream/a?x=%0d%0aSet-Cookie:%20evil=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert status_of(response) == 301
    assert b"\r\nset-cookie" not in head


# -- /upstream path escapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "rest",
    [
        "/../x",
        "/../../x",
        "/./x",
        "/y/../../x",
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/.%2e/x",
        "/..%2Fx",
        "/y%2F..%2F..%2Fx",
        "/..%5Cx",
        "/..",
    ],
)
def test_upstream_paths_with_dot_segments_cannot_leave_the_base_url(
    daemon_url: str, rest: str
) -> None:
    for model in ("a", "b"):
        status, body = send(
            daemon_url, f"GET /upstream/{model}{rest} HTTP/1.1\nHost: localhost\n\n"
        )
        assert status == 400, body
        assert json.loads(body)["error"]["code"] == "invalid_request"


def test_upstream_paths_that_only_look_like_dots_still_pass(daemon_url: str) -> None:
    status, body = send(
        daemon_url, "GET /upstream/a/v1/..x/.y/a.b%2Fc HTTP/1.1\nHost: localhost\n\n"
    )
    assert status == 200
    assert json.loads(body)["path"] == "/base/v1/..x/.y/a.b%2Fc"


@given(st.text(alphabet="./%2eEfF5cC\\x", max_size=12))
def test_dot_segment_detection_matches_a_decoding_server(rest: str) -> None:
    from urllib.parse import unquote

    decoded = unquote(rest).replace("\\", "/")
    escapes = any(seg in (".", "..") for seg in decoded.split("/"))
    assert has_dot_segment(rest) == escapes


def test_api_key_is_stripped_from_forwarded_queries_and_nothing_else() -> None:
    assert strip_api_key(b"a=1&api_key=k&b=%2F") == b"a=1&b=%2F"
    assert strip_api_key(b"api%5Fkey=k&api_keys=2") == b"api_keys=2"
    assert strip_api_key(b"x=api_key") == b"x=api_key"


# -- fuzzing -------------------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'"
TOKEN = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]),
    TOKEN.map(str.upper),
)
KNOWN_PATHS = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/audio/transcriptions",
    "/props?model=a", "/v1/models", "/running", "/health", "/logs", "/api/models/unload",
    "/api/models/unload/a", "/api/models/load/zz", "/upstream/a/x", "/upstream/b",
    "/upstream/zz/x", "/logs/stream/zz", "/", "/v1", "/upstream/", "/api/models/load/",
]  # fmt: skip
PATHS = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.lists(st.text(alphabet="abz/%.:-_~2F0", max_size=6), max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
)
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "application/json; charset=utf-8", "text/plain",
     "multipart/form-data", "multipart/form-data; boundary=xx", "application/x-www-form-urlencoded",
     "application/octet-stream", "", "application/json;;;", "a/b; c=\"d"]
)  # fmt: skip
MULTIPART = b'--xx\r\nContent-Disposition: form-data; name="model"\r\n\r\na\r\n--xx--\r\n'
BODIES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"{}", b"[]", b"null", b'{"model": 1}', b'{"model": "zz"}', b"model=a",
                     b'{"model": "a", "stream": "yes"}', b'{"model": "", "messages": 5}', MULTIPART,
                     b'{"model": "c", "messages": [{"role": "user", "content": "hi"}]}']),
)  # fmt: skip
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=METHODS,
    path=PATHS,
    content_type=CONTENT_TYPES,
    body=BODIES,
    headers=st.lists(st.tuples(TOKEN, HEADER_VALUE), max_size=4),
    chunked=st.booleans(),
)
def test_fuzzed_requests_never_get_a_proxy_500_nor_hang(
    daemon_url: str,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes,
    headers: list[tuple[str, str]],
    chunked: bool,
) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"X-{name}: {value}" for name, value in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + framed
    response = raw_request(daemon_url, data, timeout=20)  # TimeoutError = a hang
    assert response, "connection closed without an answer"
    status = status_of(response)
    _, _, payload = response.partition(b"\r\n\r\n")
    assert status != 500, response[:500]
    if status >= 500 and status != 501 and method != "HEAD":
        # anything else of ours is a clear, typed error
        error = json.loads(payload)
        assert error["src"] == "llama-swap-trio", response[:500]
        assert status in (502, 503, 504)
