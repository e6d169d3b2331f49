"""forward_http against real sockets: streaming, disconnects, errors, headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import Any, cast

import attrs
import httpx
import pytest
import trio

from llama_swap_trio.edge.upstream_client import UpstreamResponse
from llama_swap_trio.edge.wire import parse_response_head
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.forward import (
    CLIENT_CLOSED,
    forward_http,
    request_headers,
    response_headers,
)
from llama_swap_trio.http.pool import ClientPool

from .forward_support import (
    ProxyState,
    Recorder,
    closed_port,
    grant_for,
    proxy_app,
    start_front_door,
    start_server,
    upstream_app,
    wait_for,
)


@attrs.define
class Setup:
    rec: Recorder
    upstream_url: str
    proxy_url: str
    state: ProxyState
    client: httpx.AsyncClient


@pytest.fixture(params=["front_door", "hypercorn"])
async def setup(nursery: trio.Nursery, request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """Each forwarding test runs with the proxy app on both servers: the daemon's front door
    (with its relay hub) and hypercorn (plain ASGI messages, as on a handed-over connection)."""
    rec = Recorder()
    upstream_url = await start_server(nursery, upstream_app(rec))
    pool = ClientPool()
    state = ProxyState(grant=grant_for(upstream_url), pool=pool)
    start = start_front_door if request.param == "front_door" else start_server
    proxy_url = await start(nursery, proxy_app(state))
    async with httpx.AsyncClient(base_url=proxy_url, trust_env=False) as client:
        yield Setup(rec, upstream_url, proxy_url, state, client)
    await pool.aclose()


async def never_receive() -> dict[str, object]:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def discard(message: object) -> None:
    return None


def http_scope(path: str, method: str = "POST") -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1234),
    }


async def test_first_sse_chunk_reaches_client_while_upstream_still_produces(setup: Setup) -> None:
    # given an upstream that sends one chunk and then waits for the test's gate
    async with setup.client.stream("POST", "/sse", json={"stream": True}) as response:
        async with aclosing(response.aiter_raw()) as chunks:
            # when the client reads
            with trio.fail_after(5):
                first = await chunks.__anext__()
            # then the first chunk arrived although the upstream has not finished
            assert b"Hello" in first
            assert not setup.rec.gate.is_set()
            setup.rec.gate.set()
            rest = b"".join([chunk async for chunk in chunks])
    assert rest.endswith(b"data: [DONE]\n\n")
    assert response.headers["x-accel-buffering"] == "no"
    await wait_for(lambda: bool(setup.state.results))
    result = setup.state.results[0]
    assert result.status == 200
    assert (result.prompt_tokens, result.completion_tokens) == (5, 2)
    assert result.ttfb_ms is not None
    assert result.ttfb_ms <= result.duration_ms
    assert not result.client_disconnected
    assert not result.upstream_failed


async def test_client_disconnect_mid_stream_reaches_upstream_within_a_second(setup: Setup) -> None:
    # given a client reading an endless stream
    async with setup.client.stream("POST", "/forever") as response:
        with trio.fail_after(5), trio.CancelScope() as reading:
            async for _ in response.aiter_raw():
                # stop reading; the cancellation lands inside httpx's generators and closes them
                reading.cancel()
        # when it goes away
        closed_at = trio.current_time()
    # then the upstream sees the disconnect promptly
    with trio.fail_after(5):
        await setup.rec.disconnected.wait()
    assert setup.rec.disconnected_at is not None
    assert setup.rec.disconnected_at - closed_at < 1.0
    await wait_for(lambda: bool(setup.state.results))
    assert setup.state.results[0].client_disconnected


async def test_a_client_leaving_while_the_upstream_is_silent_ends_the_relay_at_once(
    setup: Setup,
) -> None:
    # given a stream whose upstream sent one event and then says nothing (the gate stays shut)
    async with setup.client.stream("POST", "/sse", json={"stream": True}) as response:
        async with aclosing(response.aiter_raw()) as chunks:
            with trio.fail_after(5):
                assert b"Hello" in await chunks.__anext__()
    # when the client goes away (nothing is written to it after: no write can fail), then the
    # edge notices by itself and the relay ends: the forwarding reports the client gone
    await wait_for(lambda: bool(setup.state.results))
    assert not setup.rec.gate.is_set()
    result = setup.state.results[0]
    assert result.client_disconnected
    assert not result.upstream_failed
    setup.rec.gate.set()


@pytest.mark.parametrize(
    "path",
    [
        "/die",  # breaks off after one chunk of a stream
        # a head with a Content-Length, then nothing: the client must still see the head, not a
        # connection closed with no answer (clients take that for a stale one and retry)
        "/length-then-die",
    ],
)
async def test_upstream_dying_mid_response_truncates_the_client_response(
    setup: Setup, path: str
) -> None:
    # given an upstream that breaks its response off
    # when the client reads it, then it sees the status and fails as truncated, never hanging
    statuses: list[int] = []

    async def read_all() -> None:
        async with setup.client.stream("POST", path) as response:
            statuses.append(response.status_code)
            async for _ in response.aiter_raw():
                pass

    with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
        await read_all()
    assert statuses == [200]
    await wait_for(lambda: bool(setup.state.results))
    result = setup.state.results[0]
    assert result.upstream_failed
    assert not result.client_disconnected


async def test_connection_refused_raises_502() -> None:
    # given a grant whose upstream does not listen
    grant = grant_for(f"http://127.0.0.1:{closed_port()}")
    pool = ClientPool()
    # when forwarding, then a 502 upstream_error is raised before anything was sent
    with pytest.raises(ProxyError) as caught:
        await forward_http(
            http_scope("/v1/chat/completions"),
            never_receive,
            discard,
            grant=grant,
            body=b"{}",
            pool=pool,
        )
    await pool.aclose()
    assert caught.value.status == 502
    assert caught.value.code == "upstream_error"
    assert "m1" in caught.value.message


async def test_connection_refused_answers_502_envelope_through_the_proxy(
    nursery: trio.Nursery,
) -> None:
    pool = ClientPool()
    state = ProxyState(grant=grant_for(f"http://127.0.0.1:{closed_port()}"), pool=pool)
    proxy_url = await start_server(nursery, proxy_app(state))
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(proxy_url + "/v1/chat/completions", json={"model": "m1"})
    await pool.aclose()
    assert response.status_code == 502
    body = response.json()
    assert body["src"] == "llama-swap-trio"
    assert body["error"]["code"] == "upstream_error"


async def test_response_head_timeout_raises_504_and_drops_the_upstream_request(
    setup: Setup,
) -> None:
    # given a model whose response head must come within 0.3 s, and an upstream that never answers
    grant = grant_for(setup.upstream_url, response_header=0.3)
    # when forwarding
    with trio.fail_after(5), pytest.raises(ProxyError) as caught:
        await forward_http(
            http_scope("/slow-head"),
            never_receive,
            discard,
            grant=grant,
            body=b"",
            pool=setup.state.pool,
        )
    # then 504, and the upstream saw its request abandoned
    assert caught.value.status == 504
    assert caught.value.code == "gateway_timeout"
    with trio.fail_after(5):
        await setup.rec.disconnected.wait()


async def test_response_strips_hop_by_hop_date_and_server(setup: Setup) -> None:
    response = await setup.client.get("/headers")
    assert response.status_code == 200
    assert response.text == "hello"
    assert len(response.headers.get_list("date")) == 1
    assert response.headers["date"] != "Thu, 01 Jan 1970 00:00:00 GMT"
    assert response.headers.get_list("server") != ["fake-upstream"]
    assert "x-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.headers["x-kept"] == "yes"
    assert "x-accel-buffering" not in response.headers


async def test_request_headers_forwarded_with_content_length_of_rewritten_body(
    setup: Setup,
) -> None:
    # given a proxy that rewrites the body to a longer one
    setup.state.rewrite = lambda body: body.replace(b'"a"', b'"a-much-longer-model-name"')
    # when the client sends hop-by-hop headers and keys
    response = await setup.client.post(
        "/echo/a%2Fb?x=%2F&y=1",
        content=b'{"model": "a"}',
        headers={
            "content-type": "application/json",
            "connection": "keep-alive, x-private-hop",
            "x-private-hop": "1",
            "authorization": "Bearer secret",
            "x-api-key": "key2",
            "te": "trailers",
        },
    )
    # then the upstream got the rewritten body with its own length, the keys, and no hop headers
    assert response.status_code == 200
    seen = setup.rec.requests[0]
    headers: dict[bytes, list[bytes]] = {}
    for name, value in seen["headers"]:
        headers.setdefault(name, []).append(value)
    assert seen["body"] == b'{"model": "a-much-longer-model-name"}'
    assert headers[b"content-length"] == [str(len(seen["body"])).encode()]
    assert headers[b"authorization"] == [b"Bearer secret"]
    assert headers[b"x-api-key"] == [b"key2"]
    assert headers[b"host"] == [setup.upstream_url.removeprefix("http://").encode()]
    assert headers[b"x-forwarded-for"] == [b"127.0.0.1"]
    for hop in (b"x-private-hop", b"te", b"transfer-encoding"):
        assert hop not in headers
    # the proxy's own client adds no default headers: only the client's one of each
    assert len(headers[b"user-agent"]) == 1
    assert len(headers[b"accept-encoding"]) == 1
    # and the path kept its percent-encoding
    assert seen["raw_path"] == b"/echo/a%2Fb"
    assert seen["query"] == b"x=%2F&y=1"


def test_request_headers_add_no_defaults_for_a_bodiless_get() -> None:
    scope = {"headers": [(b"accept", b"*/*"), (b"host", b"proxy:8080")], "client": None}
    assert request_headers(scope, b"") == [(b"accept", b"*/*")]


async def test_json_usage_is_reported(setup: Setup) -> None:
    response = await setup.client.post("/json-usage", json={"model": "m1"})
    assert response.json()["usage"]["prompt_tokens"] == 7
    await wait_for(lambda: bool(setup.state.results))
    result = setup.state.results[0]
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    assert result.tokens_per_second is not None


async def test_stale_pooled_connection_is_retried_once(nursery: trio.Nursery) -> None:
    # given a raw server whose first connection answers one request, then hangs up on the next
    # without a byte (it closed the idle connection as the client reused it), and whose second
    # connection answers
    connections = 0
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        first_connection = connections == 1
        data = b""
        for served in range(2):
            while b"\r\n\r\n" not in data:
                more = await stream.receive_some(65536)
                if not more:
                    return
                data += more
            data = data.partition(b"\r\n\r\n")[2]
            if first_connection and served == 1:
                break  # the stale keep-alive race: the request arrives as the server closes
            await stream.send_all(ok)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    pool = ClientPool()
    grant = grant_for(f"http://127.0.0.1:{port}")
    sent: list[dict[str, object]] = []

    async def record(message: dict[str, object]) -> None:
        sent.append(message)

    first = await forward_http(
        http_scope("/x", "GET"), never_receive, discard, grant=grant, body=b"", pool=pool
    )
    assert first.status == 200
    # when forwarding again (the pooled connection is taken, and hangs up)
    result = await forward_http(
        http_scope("/x", "GET"), never_receive, record, grant=grant, body=b"", pool=pool
    )
    await pool.aclose()
    # then the retry on a new connection answered, and that answer was relayed
    assert connections == 2
    assert result.status == 200
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"ok"  # type: ignore[misc]


async def test_a_new_connection_closed_before_an_answer_is_not_retried(
    nursery: trio.Nursery,
) -> None:
    # given an upstream that reads the request and hangs up (it may have acted on it: a crash)
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    pool = ClientPool()
    # when forwarding on a new connection, then it is a 502 after one attempt, not a replay
    with pytest.raises(ProxyError) as caught:
        await forward_http(
            http_scope("/x", "POST"),
            never_receive,
            discard,
            grant=grant_for(f"http://127.0.0.1:{port}"),
            body=b"{}",
            pool=pool,
        )
    await pool.aclose()
    assert caught.value.status == 502
    assert connections == 1


async def test_client_gone_before_the_head_reports_client_closed(setup: Setup) -> None:
    # given a client that is already gone
    async def gone() -> dict[str, object]:
        return {"type": "http.disconnect"}

    # when forwarding to an upstream that is slow to answer
    with trio.fail_after(5):
        result = await forward_http(
            http_scope("/slow-head"),
            gone,
            discard,
            grant=setup.state.grant,
            body=b"",
            pool=setup.state.pool,
        )
    # then the result says so and nothing was raised
    assert result.status == CLIENT_CLOSED
    assert result.client_disconnected
    assert result.ttfb_ms is None


def test_error_event_object_keeps_the_upstream_error() -> None:
    from llama_swap_trio.http.forward import _error_object

    model = grant_for("http://127.0.0.1:1").model
    upstream = json.dumps({"error": {"message": "too long", "code": 400}}).encode()
    assert _error_object(model, 400, upstream) == {"message": "too long", "code": 400}
    fallback = _error_object(model, 500, b"boom")
    assert fallback["code"] == "upstream_error"
    assert "500: boom" in str(fallback["message"])


@pytest.mark.parametrize(
    ("raw_head", "method", "expected"),
    [
        # a list of equal lengths becomes the one length
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5", "GET", [(b"content-length", b"5")]),
        # Transfer-Encoding overrides Content-Length (RFC 9112 6.3): the server frames it
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", "GET", []),
        # a bodiless answer keeps the length of what a GET would have got
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9", "HEAD", [(b"content-length", b"9")]),
    ],
)
def test_content_length_is_passed_on_as_the_body_is_really_delimited(
    raw_head: bytes, method: str, expected: list[tuple[bytes, bytes]]
) -> None:
    response = UpstreamResponse(
        cast(Any, None), cast(Any, None), parse_response_head(raw_head, method), b""
    )
    assert response_headers(response) == expected
