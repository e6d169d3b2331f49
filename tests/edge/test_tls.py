"""TLS on the listener (SPEC 6.1) with a self-signed certificate made in the test: plain
requests, a streamed response, a websocket (``wss://``), the handshake's timeout. The daemon's
side (``--tls-cert``/``--tls-key``, the feed over ``wss://``) is in tests/e2e/test_tls.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from trio_websocket import open_websocket_url

from llama_swap_trio.edge.tls import server_context
from llama_swap_trio.http.asgi import Receive, Scope, Send
from tests.edge.test_server import Echo, serving

WAIT = 10


class Certs:
    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert = folder / "cert.pem"
        self.key = folder / "key.pem"
        issued.cert_chain_pems[0].write_to_path(self.cert)
        issued.private_key_pem.write_to_path(self.key)
        self.client = ssl.create_default_context()
        self.ca.configure_trust(self.client)

    def server(self) -> ssl.SSLContext:
        return server_context(str(self.cert), str(self.key))


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


class Streamer(Echo):
    """Echo, and ``/stream``: three chunks without a Content-Length, as an SSE answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/stream":
            self.scopes.append(scope)
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i in range(3):
                body = b"data: %d\n\n" % i
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await super().__call__(scope, receive, send)


async def test_requests_a_stream_and_a_websocket_over_tls(certs: Certs) -> None:
    app = Streamer()
    async with serving(app, tls=certs.server()) as (port, _):
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(verify=certs.client, trust_env=False) as client:
            # a plain request, twice on one keep-alive connection
            for body in (b"hello", b"again"):
                answer = await client.post(base + "/echo", content=body)
                assert (answer.status_code, answer.content) == (200, body)
            # HTTP/2 is not asked for here: httpx speaks HTTP/1.1 unless told otherwise
            assert answer.http_version == "HTTP/1.1"
            async with client.stream("GET", base + "/stream") as streamed:
                events = [line async for line in streamed.aiter_lines() if line]
            assert events == ["data: 0", "data: 1", "data: 2"]
        assert {scope["scheme"] for scope in app.scopes} == {"https"}
        async with open_websocket_url(f"wss://127.0.0.1:{port}/ws", certs.client) as ws:
            await ws.send_message("over tls")
            with trio.fail_after(WAIT):
                assert await ws.get_message() == "echo over tls"


async def test_a_plain_http_client_on_the_tls_port_gets_no_answer(certs: Certs) -> None:
    async with serving(Echo(), tls=certs.server()) as (port, _):
        async with httpx.AsyncClient(trust_env=False) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{port}/", timeout=WAIT)


async def test_a_tls_client_that_never_handshakes_is_closed_after_head_timeout(
    certs: Certs,
) -> None:
    async with serving(Echo(), tls=certs.server(), head_timeout=0.3) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with trio.fail_after(WAIT):
                assert await stream.receive_some(100) == b""
