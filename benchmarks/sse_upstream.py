"""A lean streaming upstream for the streaming and memory benchmarks (trio, raw sockets).

``POST`` or ``GET`` any path with a query:

- ``?events=N&interval=S``: an SSE answer (chunked) of N events, event k sent at start + k*S
  (an absolute schedule, so delays do not accumulate); each event is
  ``data: {"t":<time.monotonic_ns() just before the send>,"i":k,...}`` padded to about 150 bytes
  like an OpenAI chat.completion.chunk; then ``data: [DONE]``.
- ``?bulk=MB``: MB MiB of unpaced 64 KiB chunks (``text/event-stream`` too), as fast as it can.
- ``/health``: 200.

Keep-alive is supported. Only what the benchmarks need; not a general HTTP server.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from urllib.parse import parse_qs, urlsplit

import trio

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
PAD = b'"object":"chat.completion.chunk","model":"bench","choices":[{"delta":{"content":" tok"}}]'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    """The request target, after reading the head and the body; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    del buf[:length]
    return head.split(b" ", 2)[1]


async def handle(stream: trio.SocketStream) -> None:
    buf = bytearray()
    try:
        while (target := await read_request(stream, buf)) is not None:
            url = urlsplit(target.decode("latin-1"))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/health":
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK")
                continue
            await stream.send_all(HEAD)
            if "bulk" in query:
                piece = chunk(b"data: " + b"x" * (65536 - 8) + b"\n\n")
                for _ in range(int(float(query["bulk"]) * 16)):
                    await stream.send_all(piece)
            else:
                events = int(query.get("events", "10"))
                interval = float(query.get("interval", "0.02"))
                start = trio.current_time()
                for k in range(events):
                    await trio.sleep_until(start + k * interval)
                    event = b'data: {"t":%d,"i":%d,%s}\n\n' % (time.monotonic_ns(), k, PAD)
                    await stream.send_all(chunk(event))
                await stream.send_all(chunk(b"data: [DONE]\n\n"))
            await stream.send_all(b"0\r\n\r\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await stream.aclose()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    trio.run(partial(trio.serve_tcp, handle, args.port, host="127.0.0.1", backlog=4096))


if __name__ == "__main__":
    main()
