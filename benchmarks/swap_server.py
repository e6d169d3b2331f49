"""A model server stand-in for the swap benchmark that starts in milliseconds.

Run as ``python -I -S benchmarks/swap_server.py PORT HEALTHY_AFTER EVENTS_FILE NAME``: standard
library modules that are built in only, so the interpreter is up in ~10-20 ms and the server's
own start time is what it says (HEALTHY_AFTER), not Python's import noise.

``GET /health`` answers 503 until HEALTHY_AFTER seconds after start, then 200; anything else gets
a small JSON 200. Every answer closes its connection. Appends ``<event> <name> <pid>
<time.monotonic()>`` lines to EVENTS_FILE: ``start``, ``healthy`` (the computed moment /health
turns 200), ``request`` (the first non-health request after becoming healthy), ``sigterm``,
``exit``.
"""

import os
import signal
import socket
import sys
import time

START = time.monotonic()


def main() -> None:
    port, healthy_after, events, name = (
        int(sys.argv[1]),
        float(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
    )
    pid = os.getpid()

    def event(kind: str, at: float) -> None:
        with open(events, "a") as f:
            f.write(f"{kind} {name} {pid} {at:.6f}\n")

    event("start", START)
    event("healthy", START + healthy_after)

    def on_term(signum: int, frame: object) -> None:
        event("sigterm", time.monotonic())
        event("exit", time.monotonic())
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    served = False
    while True:
        conn, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        now = time.monotonic()
        if data.startswith(b"GET /health"):
            ok = now - START >= healthy_after
            body = b"OK" if ok else b"loading"
            status = b"200 OK" if ok else b"503 Service Unavailable"
        else:
            if not served:
                event("request", now)
                served = True
            body = b'{"object":"chat.completion","choices":[]}'
            status = b"200 OK"
        conn.sendall(
            b"HTTP/1.1 "
            + status
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        conn.close()


main()
