"""The floor of a task-per-stream relay on trio: ``python -m benchmarks.bare_relay``.

A relay that does nothing but wait for the upstream, read and write to the client, one trio task
per stream, on the same stdlib-socket I/O as the daemon (``llama_swap_trio.edge.sockio``). Run
against the benchmark's SSE upstream with 100 paced streams, its CPU per event is what any
task-per-stream design pays before parsing or accounting anything; that figure is why the daemon
relays streamed bodies in one hub task (llama_swap_trio/edge/relay_hub.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from benchmarks import stream
from benchmarks.procs import CLK_TCK, Procs

STREAMS = 100
EVENTS = 250


async def _relay(upstream_port: int, client: trio.SocketStream) -> None:
    from llama_swap_trio.edge import sockio

    sock = sockio.stdlib_socket(client.socket)
    upstream = sockio.stdlib_socket((await trio.open_tcp_stream("127.0.0.1", upstream_port)).socket)
    try:
        await sockio.send_all(upstream, await sockio.receive(sock, 65536))  # the request
        short = False
        while data := await sockio.receive(upstream, 65536, wait_first=short):
            short = len(data) < 65536
            await sockio.send_all(sock, data)
    finally:
        sock.close()
        upstream.close()


def serve(port: int, upstream_port: int) -> None:
    """The relay process: ``python -m benchmarks.bare_relay serve PORT UPSTREAM_PORT``."""

    async def main() -> None:
        async def handler(client: trio.SocketStream) -> None:
            await _relay(upstream_port, client)

        await trio.serve_tcp(handler, port, host="127.0.0.1")

    trio.run(main)


def _cpu(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def measure() -> None:
    with Procs() as procs:
        upstream_port = procs.sse_upstream()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        relay = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bare_relay", "serve", str(port), str(upstream_port)]
        )
        try:
            trio.run(_wait_listening, port)
            trio.run(stream.paced, port, 5, 20, 0.02)  # warm up
            for _ in range(2):
                before = _cpu(relay.pid)
                delays = trio.run(stream.paced, port, STREAMS, EVENTS, 0.02)
                after = _cpu(relay.pid)
                per_event = [
                    (b - a) / CLK_TCK / len(delays) * 1e6
                    for a, b in zip(before, after, strict=True)
                ]
                print(
                    f"bare trio relay, {STREAMS} streams: p50 {stream.pct(delays, 0.5):.2f} ms, "
                    f"p99 {stream.pct(delays, 0.99):.2f} ms, CPU {per_event[0]:.0f} us user + "
                    f"{per_event[1]:.0f} us system per event"
                )
        finally:
            relay.kill()
            relay.wait()


async def _wait_listening(port: int) -> None:
    with trio.fail_after(10):
        while True:
            try:
                await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                return
            except OSError:
                await trio.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        started = time.time()
        measure()
        print(f"({time.time() - started:.0f} s)")
