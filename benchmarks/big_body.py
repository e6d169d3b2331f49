"""Big JSON bodies: the daemon's peak memory, and how long ``/health`` pauses while one is read.

``python -m benchmarks.big_body [--mb 100] [--src DIR]`` starts the daemon (from this checkout,
or from ``--src``, e.g. ``git archive <rev> | tar -x -C /tmp/rev``), then for each body:

- ``array``: ``[{},{},...]`` of ``--mb`` MB (under the 100 MiB limit): not an object, a 400;
- ``object``: ``{"model":"nope","x":[{},{},...]}``: valid, read whole, then 404 (unknown model);

sends it on one connection while a probe on another asks ``GET /health`` back to back, and
reports the longest single ``/health`` answer while the body was being sent and answered (the
pause; beside it the longest in the 3 s before, with no big body: the machine's own noise), the
big request's status and time, and the daemon's peak RSS (``VmHWM`` in ``/proc/PID/status``; the
daemon is fresh for each body, so the peak is that body's). Targets
(issue 13): pause under 50 ms, peak RSS under three times the body.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import trio

from benchmarks.procs import Procs, loadavg

CONFIG = 'log_level = "warn"\nlog_to_stdout = "none"\n[models.m]\ncmd = "sleep 100000 ${PORT}"\n'
#: bytes per write of the big body (as a client library would send it)
SEND_SIZE = 1024 * 1024
#: seconds of probing before the big body, for the pause the machine's load alone causes
CONTROL_SECONDS = 3.0


def body_of(kind: str, mb: int) -> bytes:
    count = mb * 1_000_000 // 3
    items = b"{}," * (count - 1) + b"{}"
    if kind == "array":
        return b"[" + items + b"]"
    return b'{"model":"nope","x":[' + items + b"]}"


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def _read_response(stream: trio.SocketStream) -> int:
    """Read one response with a Content-Length body; its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError("closed before a response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await stream.receive_some()
        if not chunk:
            break
        rest += chunk
    return int(head.split(b" ", 2)[1])


async def measure(port: int, body: bytes) -> dict[str, Any]:
    done = trio.Event()
    pauses: list[float] = []

    async def probe() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            while not done.is_set():
                started = time.perf_counter()
                await stream.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                await _read_response(stream)
                pauses.append(time.perf_counter() - started)
                await trio.sleep(0.002)

    async def big() -> tuple[int, float]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            started = time.perf_counter()
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            await stream.send_all(head.encode())
            view = memoryview(body)
            for offset in range(0, len(body), SEND_SIZE):
                await stream.send_all(view[offset : offset + SEND_SIZE])
            status = await _read_response(stream)
            return status, time.perf_counter() - started

    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(0.2)  # the probe's connection is warm
        pauses.clear()
        await trio.sleep(CONTROL_SECONDS)  # the machine's own noise, with no big body
        control, pauses[:] = list(pauses), []
        with trio.fail_after(300):
            status, seconds = await big()
        done.set()
    result.update(
        status=status,
        request_s=round(seconds, 3),
        health_probes=len(pauses),
        health_pause_max_ms=round(max(pauses) * 1000, 1),
        health_pause_max_ms_idle=round(max(control) * 1000, 1),
    )
    return result


def run(mb: int, src: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"mb": mb, "loadavg_start": loadavg(), "src": src or "this checkout"}
    for kind in ("array", "object"):
        body = body_of(kind, mb)
        with Procs() as procs:
            port, pids = procs.daemon(CONFIG, name=f"big-{kind}", src=src)
            before = vm_hwm_kb(pids[0])
            figures = trio.run(measure, port, body)
            peak = vm_hwm_kb(pids[0])
        figures.update(
            body_mb=round(len(body) / 1e6, 1),
            rss_peak_mb=round(peak / 1024, 1),
            rss_peak_before_mb=round(before / 1024, 1),
            rss_peak_over_body=round(peak * 1024 / len(body), 2),
        )
        out[kind] = figures
        print(f"  {kind}: {json.dumps(figures)}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=int, default=100, help="body size in MB (default 100)")
    p.add_argument("--src", help="run the daemon from this checkout instead")
    args = p.parse_args()
    print(json.dumps(run(args.mb, args.src), indent=2))


if __name__ == "__main__":
    main()
