"""Streaming: per-event added latency and proxy CPU per event; bulk relay throughput.

The lean SSE upstream (benchmarks/sse_upstream.py) stamps every event with ``time.monotonic_ns()``
just before sending it; the client (trio, raw sockets, same machine so the same monotonic clock)
records receive time minus stamp for every event. Streams are paced at 50 events/s each and their
starts are spread over one interval, so the events of N streams arrive evenly rather than in bursts
of N. ``added`` is the proxied percentile minus the direct one measured in the same round.
``hello`` streams the same events from the raw-ASGI hello app on hypercorn (no upstream): its CPU
per event is the floor our stack puts under the proxy's.

Bulk: one unpaced stream of 64 KiB chunks, bytes received over time, direct vs proxied.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import trio

from benchmarks.procs import BASELINE_SRC, Procs, cpu_seconds, loadavg

STAMP = re.compile(rb'"t":(\d+)')
REQUEST_BODY = b'{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def request(query: str) -> bytes:
    return (
        b"POST /v1/chat/completions?%s HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (query.encode(), len(REQUEST_BODY), REQUEST_BODY)
    )


async def one_stream(port: int, query: str, delays: list[int], delay_start: float) -> None:
    await trio.sleep(delay_start)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request(query))
        buf = b""
        while True:
            data = await stream.receive_some(65536)
            now = time.monotonic_ns()
            if not data:
                return
            buf += data
            cut = buf.rfind(b"\n\n")
            if cut < 0:
                continue
            done, buf = buf[:cut], buf[cut + 2 :]
            delays.extend(now - int(t) for t in STAMP.findall(done))
            if b"[DONE]" in done:
                return


async def paced(port: int, n: int, events: int, interval: float) -> list[int]:
    delays: list[int] = []
    query = f"events={events}&interval={interval}"
    with trio.fail_after(events * interval + 60):
        async with trio.open_nursery() as nursery:
            for j in range(n):
                nursery.start_soon(one_stream, port, query, delays, j * interval / n)
    return delays


async def bulk(port: int, mib: int) -> float:
    """MB/s (10^6 bytes) of one unpaced stream of ``mib`` MiB."""
    with trio.fail_after(120):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            start = time.monotonic()
            await stream.send_all(request(f"bulk={mib}"))
            total = 0
            while True:
                data = await stream.receive_some(1 << 18)
                if not data:
                    break
                total += len(data)
                if data.endswith(b"0\r\n\r\n"):
                    break
            return total / (time.monotonic() - start) / 1e6


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # ns -> ms


def bench_config(port: int) -> str:
    return f"""
log_level = "warn"
log_to_stdout = "none"
hooks.on_startup.preload = ["bench"]

[models.bench]
cmd = "sleep 100000"
proxy = "http://127.0.0.1:{port}"
"""


def run(
    rounds: int = 3,
    quick: bool = False,
    streams: tuple[int, ...] = (1, 20, 100),
    bulk_mib: int = 256,
) -> dict[str, Any]:
    events, interval = (100, 0.02) if quick else (250, 0.02)
    runs: list[dict[str, Any]] = []
    with Procs() as procs:
        sse_port = procs.sse_upstream()
        proxy_port, proxy_pids = procs.daemon(bench_config(sse_port), ready_model="bench")
        hello_port, hello_pids = procs.hello()
        targets = {"direct": sse_port, "proxy": proxy_port, "hello": hello_port}
        cpu_pids = {"direct": proxy_pids, "proxy": proxy_pids, "hello": hello_pids}
        names = ["direct", "proxy", "hello"]
        go = procs.goproxy(sse_port)
        if go is not None:  # the Go hop (benchmarks/goproxy): llama-swap's stand-in
            targets["go-proxy"], cpu_pids["go-proxy"] = go
            names.append("go-proxy")
        if BASELINE_SRC:
            base_port, base_pids = procs.daemon(
                bench_config(sse_port), name="baseline", ready_model="bench", src=BASELINE_SRC
            )
            targets["baseline"], cpu_pids["baseline"] = base_port, base_pids
            names.append("baseline")
        trio.run(paced, proxy_port, 5, 20, 0.005)  # warm-up
        for n in streams:
            for r in range(rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:  # the order rotates per round
                    before = cpu_seconds(cpu_pids[name])
                    delays = trio.run(paced, targets[name], n, events, interval)
                    cpu = cpu_seconds(cpu_pids[name]) - before
                    row = {
                        "kind": "paced",
                        "target": name,
                        "streams": n,
                        "round": r,
                        "events": len(delays),
                        "expected": n * events,
                        "p50_ms": pct(delays, 0.50),
                        "p99_ms": pct(delays, 0.99),
                        "max_ms": pct(delays, 1.0),
                        # the daemon's CPU (for "hello": the hello app's, the hypercorn floor)
                        "proxy_cpu_us_per_event": 1e6 * cpu / max(1, len(delays)),
                        "loadavg": loadavg(),
                    }
                    runs.append(row)
                    print(
                        f"  {n:>3} streams {name:<6} p50 {row['p50_ms']:.3f} ms  "
                        f"p99 {row['p99_ms']:.3f} ms  max {row['max_ms']:.3f} ms  proxy cpu "
                        f"{row['proxy_cpu_us_per_event']:.0f} us/event",
                        flush=True,
                    )
        for r in range(rounds):
            for name in [n for n in names if n != "hello"]:
                before = cpu_seconds(cpu_pids[name])
                mbps = trio.run(bulk, targets[name], 32 if quick else bulk_mib)
                cpu = cpu_seconds(cpu_pids[name]) - before
                runs.append(
                    {
                        "kind": "bulk",
                        "target": name,
                        "round": r,
                        "MB_per_s": mbps,
                        "proxy_cpu_s": cpu,
                    }
                )
                print(f"  bulk {name:<6} {mbps:.0f} MB/s", flush=True)
    return {"runs": runs, "summary": summarize(runs)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    paced_runs = [r for r in runs if r["kind"] == "paced"]
    for n in sorted({r["streams"] for r in paced_runs}):
        row: dict[str, Any] = {}
        for name in ("direct", "proxy", "hello", "go-proxy", "baseline"):
            mine = [r for r in paced_runs if r["streams"] == n and r["target"] == name]
            if not mine:
                continue
            row[name] = {
                k: statistics.median(r[k] for r in mine)
                for k in ("p50_ms", "p99_ms", "max_ms", "proxy_cpu_us_per_event")
            }
            row[name]["lost_events"] = sum(r["expected"] - r["events"] for r in mine)
        added = []
        for r in range(max(x["round"] for x in paced_runs) + 1):
            pair = {x["target"]: x for x in paced_runs if x["streams"] == n and x["round"] == r}
            if "proxy" in pair and "direct" in pair:
                added.append(
                    (
                        pair["proxy"]["p50_ms"] - pair["direct"]["p50_ms"],
                        pair["proxy"]["p99_ms"] - pair["direct"]["p99_ms"],
                    )
                )
        row["added_p50_ms"] = statistics.median(a for a, _ in added)
        row["added_p99_ms"] = statistics.median(b for _, b in added)
        row["proxy_cpu_us_per_event"] = row["proxy"]["proxy_cpu_us_per_event"]
        out[f"{n} streams"] = row
    for name in ("direct", "proxy", "go-proxy", "baseline"):
        mine = [r["MB_per_s"] for r in runs if r["kind"] == "bulk" and r["target"] == name]
        if mine:
            out[f"bulk {name} MB/s"] = statistics.median(mine)
    return out
