"""Memory: idle RSS with 20 models configured; RSS per open idle streaming connection.

- idle: the daemon with 20 models (none running), after one ``/v1/models`` and one ``/running``.
- streams: 200 SSE streams through the daemon to the lean upstream, opened at once; each gets one
  event and then stays open and idle. RSS is read once all 200 have their first event;
  (RSS - RSS before) / 200 is the cost of one open stream. The time to get all 200 first events,
  and the slowest single connect, show whether the accept backlog stalled (a dropped SYN is
  retried after 1 s).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import trio

from benchmarks.procs import Procs, rss_kb
from benchmarks.stream import bench_config, request

N_STREAMS = 200


def twenty_models() -> str:
    out = ['log_level = "warn"', 'log_to_stdout = "none"']
    for i in range(20):
        out += [f"[models.m{i:02d}]", 'cmd = "sleep 100000 ${PORT}"', ""]
    return "\n".join(out)


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Procs() as procs:
        port, pids = procs.daemon(twenty_models(), name="idle")
        with httpx.Client(trust_env=False, timeout=10) as client:
            client.get(f"http://127.0.0.1:{port}/v1/models").raise_for_status()
            client.get(f"http://127.0.0.1:{port}/running").raise_for_status()
        time.sleep(0.5)
        out["idle_rss_mb_20_models"] = rss_kb(pids[0]) / 1024
        print(f"  idle RSS with 20 models: {out['idle_rss_mb_20_models']:.1f} MB", flush=True)

        sse_port = procs.sse_upstream()
        config = bench_config(sse_port)
        port, pids = procs.daemon(config, name="streams", ready_model="bench")
        # warm the code paths (imports, first-use allocations) before the baseline
        trio.run(_warm, port)
        time.sleep(0.5)
        base = rss_kb(pids[0])
        held: dict[str, Any] = {}

        def read() -> None:
            held["rss_open_kb"] = rss_kb(pids[0])

        async def go() -> dict[str, Any]:
            return await _hold(port, read)

        stats = trio.run(go)
        per = (held["rss_open_kb"] - base) / N_STREAMS
        out.update(
            {
                "streams_rss_before_mb": base / 1024,
                "streams_rss_open_mb": held["rss_open_kb"] / 1024,
                "rss_per_open_stream_kb": per,
                **stats,
            }
        )
        print(
            f"  {N_STREAMS} open idle streams: {per:.1f} KB each; all first events within "
            f"{stats['first_event_ms_max']:.0f} ms, slowest connect "
            f"{stats['connect_ms_max']:.1f} ms",
            flush=True,
        )
    return {"summary": out}


async def _warm(port: int) -> None:
    from benchmarks.stream import paced

    await paced(port, 20, 3, 0.01)


async def _hold(port: int, read: Any) -> dict[str, Any]:
    connect_ms: list[float] = []
    first: list[float] = []
    streams: list[trio.SocketStream] = []
    all_in = trio.Event()
    release = trio.Event()
    query = "events=2&interval=60"

    async def one() -> None:
        t0 = time.monotonic()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        connect_ms.append((time.monotonic() - t0) * 1000)
        streams.append(stream)
        await stream.send_all(request(query))
        buf = b""
        while b'"t":' not in buf:
            data = await stream.receive_some(65536)
            assert data, "stream closed early"
            buf += data
        first.append((time.monotonic() - t0) * 1000)
        if len(first) == N_STREAMS:
            all_in.set()
        await release.wait()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(N_STREAMS):
                nursery.start_soon(one)
            await all_in.wait()
            await trio.sleep(0.5)
            read()
            release.set()
    for stream in streams:
        await stream.aclose()
    return {
        "held": len(first),
        "connect_ms_max": max(connect_ms),
        "first_event_ms_p50": sorted(first)[len(first) // 2],
        "first_event_ms_max": max(first),
    }
