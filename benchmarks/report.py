"""Markdown tables from results JSON: ``python -m benchmarks.report LABEL [LABEL...]``.

Used to write RESULTS.md; one column group per label so before and after sit side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(label: str, what: str) -> dict[str, Any] | None:
    path = RESULTS / f"{label}-{what}.json"
    return json.loads(path.read_text()) if path.exists() else None


def warm(label: str) -> list[str]:
    data = load(label, "warm")
    if data is None:
        return []
    meta = data["meta"]
    out = [
        f"**warm, `{label}`** — {meta['date']}, load average at start {meta['loadavg_start']}, "
        f"`{meta['command']}`",
        "",
        "| conns | target | req/s | p50 ms | p99 ms | CPU ms/req |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for c, per in data["summary"].items():
        for name in ("direct", "nginx-proxy", "go-proxy", "hello", "baseline", "proxy"):
            if name in per:
                r = per[name]
                out.append(
                    f"| {c[2:]} | {name} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | "
                    f"{r['p99_ms']:.2f} | {r['cpu_ms_per_req']:.3f} |"
                )
        for who in ("baseline", "proxy"):
            ratio = per.get(f"ratio {who}/hello rps", {}).get("value")
            added = per.get(f"{who} added p50 ms", {}).get("value")
            if ratio is not None:
                out.append(
                    f"| {c[2:]} | **{who}/hello req/s** | **{ratio:.2f}x** | "
                    f"added p50 **{added:.3f} ms** | | |"
                )
    return [*out, ""]


def stream(label: str) -> list[str]:
    data = load(label, "stream")
    if data is None:
        return []
    meta = data["meta"]
    s = data["summary"]
    out = [
        f"**stream, `{label}`** — {meta['date']}, load average at start {meta['loadavg_start']}, "
        f"`{meta['command']}`",
        "",
        "| streams x 50 ev/s | direct p50 / p99 ms | proxy p50 / p99 ms | added p50 / p99 ms |"
        " proxy CPU us/event | hello (hypercorn alone) CPU us/event |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in s.items():
        if not key.endswith("streams"):
            continue
        d, p = row["direct"], row["proxy"]
        hello = row.get("hello", {}).get("proxy_cpu_us_per_event")
        go = row.get("go-proxy")
        if go is not None:
            out.append(
                f"| {key.split()[0]} (go-proxy) | | {go['p50_ms']:.2f} / {go['p99_ms']:.2f} | "
                f"{go['p50_ms'] - d['p50_ms']:.2f} / {go['p99_ms'] - d['p99_ms']:.2f} | "
                f"{go['proxy_cpu_us_per_event']:.0f} | |"
            )
        base = row.get("baseline")
        if base is not None:
            out.append(
                f"| {key.split()[0]} (baseline) | | {base['p50_ms']:.2f} / {base['p99_ms']:.2f} | "
                f"{base['p50_ms'] - d['p50_ms']:.2f} / {base['p99_ms'] - d['p99_ms']:.2f} | "
                f"{base['proxy_cpu_us_per_event']:.0f} | |"
            )
        out.append(
            f"| {key.split()[0]} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | "
            f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} | {row['added_p50_ms']:.2f} / "
            f"{row['added_p99_ms']:.2f} | {row['proxy_cpu_us_per_event']:.0f} | "
            + ("n/a |" if hello is None else f"{hello:.0f} |")
        )
    bulk = ", ".join(
        f"{name} **{s[f'bulk {name} MB/s']:.0f} MB/s**"
        for name in ("direct", "go-proxy", "baseline", "proxy")
        if f"bulk {name} MB/s" in s
    )
    out += ["", f"Bulk, one unpaced stream: {bulk}.", ""]
    return out


def swap(label: str) -> list[str]:
    data = load(label, "swap")
    if data is None:
        return []
    meta = data["meta"]
    s = data["summary"]
    out = [
        f"**swap, `{label}`** — {meta['date']}, load average at start {meta['loadavg_start']}, "
        f"`{meta['command']}`; servers healthy {data['healthy_after_s']} s after start, "
        f"interpreter start-up {data['exec_ms']:.0f} ms (measured, counted as the server's)",
        "",
        "| per swap | p50 ms | p95 ms |",
        "| --- | ---: | ---: |",
    ]
    names = {
        "total_ms": "request time (client)",
        "server_stop_ms": "old server's own stop (SIGTERM -> exit)",
        "server_start_ms": "new server's own start (spawn -> healthy)",
        "overhead_ms": "**proxy overhead** (request - stop - start)",
        "notice_ms": "**readiness noticed**: healthy -> the request reaches the new server",
        "warm_request_ms": "the same request again, model warm (forwarding alone)",
        "exec_ms": "interpreter start-up of the server command (measured each swap)",
        "request_to_sigterm_ms": "request -> SIGTERM to the old server",
        "exit_to_start_ms": "old exit -> new server's first line of Python",
        "llama_swap_cadence_ms": "llama-swap's cadence alone, same start times",
    }
    for key, name in names.items():
        if key not in s:
            continue
        out.append(f"| {name} | {s[key]['p50']:.1f} | {s[key]['p95']:.1f} |")
    return [*out, ""]


def memory(label: str) -> list[str]:
    data = load(label, "memory")
    if data is None:
        return []
    meta = data["meta"]
    s = data["summary"]
    return [
        f"**memory, `{label}`** — {meta['date']}, `{meta['command']}`",
        "",
        f"- idle RSS, 20 models configured: **{s['idle_rss_mb_20_models']:.1f} MB**",
        f"- 200 open idle streams: **{s['rss_per_open_stream_kb']:.1f} KB** each "
        f"({s['streams_rss_before_mb']:.1f} -> {s['streams_rss_open_mb']:.1f} MB); all 200 had "
        f"their first event within {s['first_event_ms_max']:.0f} ms (p50 "
        f"{s['first_event_ms_p50']:.0f} ms); slowest TCP connect {s['connect_ms_max']:.1f} ms",
        "",
    ]


def main() -> None:
    for label in sys.argv[1:]:
        for part in (warm, stream, swap, memory):
            print("\n".join(part(label)))


if __name__ == "__main__":
    main()
