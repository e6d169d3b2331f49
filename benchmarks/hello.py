"""A minimal raw-ASGI app on hypercorn's trio worker: the ceiling of our stack.

It reads the request body and answers the same fixed chat completion as the fast upstream, in the
same process model as the daemon (one trio process, hypercorn, no access log). With
``?events=N&interval=S`` it streams N time-stamped SSE events instead, exactly like
``sse_upstream.py``: the floor of what hypercorn costs per streamed event.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from benchmarks.procs import CHAT_BODY
from benchmarks.sse_upstream import PAD
from llama_swap_trio.http.asgi import answer_lifespan

BODY = CHAT_BODY.encode()
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    query = scope.get("query_string", b"")
    if query.startswith(b"events="):
        await stream(send, query)
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def stream(send: Any, query: bytes) -> None:
    params = dict(item.split(b"=", 1) for item in query.split(b"&"))
    events, interval = int(params[b"events"]), float(params[b"interval"])
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    start = trio.current_time()
    for k in range(events):
        await trio.sleep_until(start + k * interval)
        event = b'data: {"t":%d,"i":%d,%s}\n\n' % (time.monotonic_ns(), k, PAD)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.backlog = 1024
    config.include_server_header = False
    trio.run(serve, app, config)


if __name__ == "__main__":
    main()
