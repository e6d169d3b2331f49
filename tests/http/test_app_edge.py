"""The app against a fake edge (tests/http/fake_edge.py): no client socket anywhere.

The whole app (routing, forwarding, the feed's request events) serves a request whose edge is
the fake; the upstream is the in-process fake upstream on 127.0.0.1. These prove the app's one
path for a streamed body: the head goes out as an ASGI message, the body through
``Edge.relay``, and how the relay ended (done, client gone, upstream failed) becomes the
request's event; the disconnect watch is the edge's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from llama_swap_trio.edge.contract import CLIENT_GONE, DONE, UPSTREAM_FAILED
from llama_swap_trio.feed.bus import EventBus, Subscription
from llama_swap_trio.http.app import create_app
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.logbuffer import LogBuffer

from .appkit import FakeRouter, config, model
from .fake_edge import FakeEdge
from .forward_support import Recorder, start_server, upstream_app, wait_for

CHAT = json.dumps({"model": "m1", "stream": True, "messages": []}).encode()


@attrs.define
class Rig:
    app: Any
    rec: Recorder
    router: FakeRouter
    events: Subscription

    async def serve(self, edge: FakeEdge, method: str, path: str, body: bytes = b"") -> None:
        """Run the app for one request on ``edge`` (bounded in time)."""
        with trio.fail_after(10):
            await self.app(edge.scope(method, path, body), edge.receive, edge.send)

    def request_event(self) -> dict[str, Any]:
        """The feed's ``request`` event of the (one) forwarded request."""
        found = []
        while (event := self.events.get_nowait()) is not None:
            if event.get("type") == "request":
                found.append(event)
        assert len(found) == 1, found
        return found[0]


@asynccontextmanager
async def rig(**model_fields: Any) -> AsyncIterator[Rig]:
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, upstream_app(rec))
        cfg = config(model("m1", proxy=url, **model_fields))
        router = FakeRouter(cfg)
        bus = EventBus()
        pool = ClientPool()
        app = create_app(
            cfg,
            router,
            pool=pool,
            bus=bus,
            proxy_logs=LogBuffer(),
            upstream_logs={},
            shutting_down=lambda: False,
        )
        with bus.subscribe() as events:
            yield Rig(app, rec, router, events)
        await pool.aclose()
        nursery.cancel_scope.cancel()


async def wait_until(event: trio.Event, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        await event.wait()


async def test_a_streamed_answer_goes_through_the_edges_relay_and_is_accounted() -> None:
    edge = FakeEdge()
    async with rig() as r:
        await r.serve(edge, "POST", "/v1/chat/completions", CHAT)
        event = r.request_event()
    # the head as an ASGI message, through the app's send (CORS, access log); the body relayed
    head = edge.head
    assert head is not None
    assert head["status"] == 200
    assert edge.header(b"content-type") == b"text/event-stream"
    assert edge.header(b"x-accel-buffering") == b"no"
    assert edge.body_messages == []  # not one body byte bypassed the edge
    assert edge.outcomes == [DONE]
    assert b'"Hello"' in edge.relayed_body
    assert edge.relayed_body.endswith(b"data: [DONE]\n\n")
    # the relayed pieces were counted: usage, and the time to the first byte
    assert event["status"] == 200
    assert event["prompt_tokens"] == 5
    assert event["completion_tokens"] == 2
    assert event["ttfb_ms"] is not None
    assert "client_disconnected" not in event
    assert "error" not in event


async def test_a_whole_json_answer_goes_through_the_edge_too() -> None:
    edge = FakeEdge()
    async with rig() as r:
        await r.serve(edge, "POST", "/upstream/m1/json-usage", b"{}")
        event = r.request_event()
    assert edge.header(b"content-type") == b"application/json"
    assert edge.outcomes == [DONE]
    assert json.loads(edge.relayed_body)["usage"]["completion_tokens"] == 3
    assert edge.body_messages == []
    assert (event["status"], event["prompt_tokens"], event["completion_tokens"]) == (200, 7, 3)


async def test_request_progress_counts_what_the_edge_relayed_while_the_stream_runs() -> None:
    edge = FakeEdge(hold_after_first=True)
    async with rig() as r, trio.open_nursery() as nursery:
        nursery.start_soon(r.serve, edge, "POST", "/upstream/m1/sse", b"{}")
        await wait_until(edge.first_piece)
        (progress,) = r.app.observe.tracker.progress_events()
        assert progress["type"] == "request_progress"
        assert progress["chunks"] == 1
        assert progress["bytes"] == len(edge.relayed[0])
        r.rec.gate.set()
        edge.go_on.set()
    assert edge.outcomes == [DONE]


async def test_a_client_that_leaves_mid_stream_ends_the_relay_and_the_upstream_request() -> None:
    edge = FakeEdge(leave_after=1)
    async with rig() as r:
        await r.serve(edge, "POST", "/upstream/m1/forever", b"{}")  # streams until cut off
        await wait_until(r.rec.disconnected)  # the upstream saw its request closed
        event = r.request_event()
    assert edge.outcomes == [CLIENT_GONE]
    assert len(edge.relayed) == 1
    assert event["status"] == 200
    assert event["client_disconnected"] is True
    assert edge.body_messages == []  # nothing was sent after the client left


async def test_an_upstream_that_dies_mid_stream_leaves_the_response_unfinished() -> None:
    edge = FakeEdge()
    async with rig() as r:
        await r.serve(edge, "POST", "/upstream/m1/die", b"{}")
        event = r.request_event()
    assert edge.outcomes == [UPSTREAM_FAILED]
    assert edge.relayed_body == b"data: {}\n\n"
    # no last body message: the server closes the connection, the client sees it truncated
    assert edge.body_messages == []
    assert event["status"] == 200
    assert event["error"] == "upstream_error"


async def test_a_client_that_leaves_before_the_head_gets_nothing_and_is_counted_as_gone() -> None:
    edge = FakeEdge()
    async with rig() as r, trio.open_nursery() as nursery:
        nursery.start_soon(r.serve, edge, "POST", "/upstream/m1/slow-head", b"{}")
        await wait_for(lambda: bool(r.rec.requests), 10)  # the upstream holds its head
        edge.leave()  # the edge's watch cuts the wait for the upstream's head
        await wait_until(r.rec.disconnected)
    event = r.request_event()
    assert edge.sent == []
    assert edge.outcomes == []
    assert event["status"] == 499
    assert event["client_disconnected"] is True


async def test_a_loading_state_stream_relays_the_upstream_body_through_the_edge() -> None:
    edge = FakeEdge()
    async with rig(send_loading_state=True) as r:  # the fake router's model is not ready yet
        await r.serve(edge, "POST", "/v1/chat/completions", CHAT)
        event = r.request_event()
    # the 200 SSE head and the loading progress are the app's own messages...
    assert edge.head is not None
    assert edge.head["status"] == 200
    assert edge.body_messages
    assert all(m.get("more_body") for m in edge.body_messages)
    # ...the model's stream is the edge's relay, in the same response
    assert edge.outcomes == [DONE]
    assert b'"Hello"' in edge.relayed_body
    assert edge.relayed_body.endswith(b"data: [DONE]\n\n")
    assert (event["status"], event["completion_tokens"]) == (200, 2)
