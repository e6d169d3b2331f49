"""Warm overhead: small non-streaming chat completions to a ready model, with wrk.

Four targets, measured in alternating rounds at each connection count so that machine noise (other
people's tests on the same 2 cores) hits them all alike:

- ``direct``: the fast upstream (nginx returning a fixed chat completion);
- ``nginx-proxy``: nginx as a reference reverse proxy in front of it;
- ``hello``: a raw-ASGI app on hypercorn's trio worker (our stack's ceiling);
- ``proxy``: llama-swap-trio in front of the fast upstream;
- ``go-proxy``: a Go reverse proxy of the standard library (``benchmarks/goproxy``), the stand-in
  for llama-swap's hop (only where a Go toolchain is installed).

For each run: req/s, p50/p99 latency (wrk --latency) and the server's CPU per request (utime +
stime from /proc over the run / requests). The summary gives medians over rounds and the ratios.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import BASELINE_SRC, CHAT_REQUEST, Procs, cpu_seconds, loadavg

LUA = f"""
wrk.method = "POST"
wrk.body = '{CHAT_REQUEST}'
wrk.headers["Content-Type"] = "application/json"
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": total,
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",  # type: ignore[dict-item]
    }


def run_wrk(port: int, connections: int, seconds: float, lua: Path) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}/v1/chat/completions",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return parse_wrk(out.stdout)


def bench_config(upstream_port: int) -> str:
    return f"""
log_level = "warn"
log_to_stdout = "none"
health_check_timeout = 30
hooks.on_startup.preload = ["bench"]

[models.bench]
cmd = "sleep 100000"
proxy = "http://127.0.0.1:{upstream_port}"
check_endpoint = "/health"
"""


def run(
    rounds: int = 3,
    seconds: float = 5.0,
    conns: tuple[int, ...] = (1, 10, 50),
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    with Procs() as procs:
        lua = procs.dir / "post.lua"
        lua.write_text(LUA)
        up_port, up_pids = procs.nginx_upstream()
        ref_port, ref_pids = procs.nginx_proxy(up_port)
        hello_port, hello_pids = procs.hello()
        proxy_port, proxy_pids = procs.daemon(bench_config(up_port), ready_model="bench")
        targets = {
            "direct": (up_port, up_pids),
            "nginx-proxy": (ref_port, ref_pids),
            "hello": (hello_port, hello_pids),
            "proxy": (proxy_port, proxy_pids),
        }
        go = procs.goproxy(up_port)
        if go is not None:
            targets["go-proxy"] = go
        if BASELINE_SRC:
            targets["baseline"] = procs.daemon(
                bench_config(up_port), name="baseline", ready_model="bench", src=BASELINE_SRC
            )
        if only:
            targets = {k: v for k, v in targets.items() if k in only}
        # warm-up: connections, pools, code paths
        for port, _ in targets.values():
            run_wrk(port, 10, 1, lua)
        runs: list[dict[str, Any]] = []
        loads: list[str] = []
        names = list(targets)
        for c in conns:
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]  # rotate the order
                for name in order:
                    port, pids = targets[name]
                    before = cpu_seconds(pids)
                    result = run_wrk(port, c, seconds, lua)
                    cpu = cpu_seconds(pids) - before
                    result.update(
                        target=name,
                        c=c,
                        round=r,
                        cpu_ms_per_req=1000 * cpu / max(1, result["requests"]),
                    )
                    runs.append(result)
                    print(
                        f"  c={c:<3} {name:<12} {result['rps']:>9.0f} req/s  "
                        f"p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms  "
                        f"cpu {result['cpu_ms_per_req']:.3f} ms/req",
                        flush=True,
                    )
                loads.append(loadavg())
                time.sleep(0.5)
        proxy_rss = Path(f"/proc/{proxy_pids[0]}/status").read_text()
    summary = summarize(runs)
    return {
        "runs": runs,
        "summary": summary,
        "loadavg": loads,
        "proxy_status_after": [x for x in proxy_rss.splitlines() if x.startswith("VmRSS")],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in sorted({r["c"] for r in runs}):
        per: dict[str, dict[str, float]] = {}
        for name in sorted({r["target"] for r in runs}):
            mine = [r for r in runs if r["c"] == c and r["target"] == name]
            per[name] = {
                key: statistics.median(r[key] for r in mine)
                for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")
            }
        if "proxy" in per and "hello" in per:
            per["ratio proxy/hello rps"] = {"value": per["proxy"]["rps"] / per["hello"]["rps"]}
        if "baseline" in per and "hello" in per:
            per["ratio baseline/hello rps"] = {
                "value": per["baseline"]["rps"] / per["hello"]["rps"]
            }
            per["baseline added p50 ms"] = {
                "value": per["baseline"]["p50_ms"] - per["direct"]["p50_ms"]
            }
        if "proxy" in per and "direct" in per:
            per["proxy added p50 ms"] = {"value": per["proxy"]["p50_ms"] - per["direct"]["p50_ms"]}
        if "proxy" in per and "go-proxy" in per:
            per["ratio proxy/go-proxy cpu per req"] = {
                "value": per["proxy"]["cpu_ms_per_req"] / per["go-proxy"]["cpu_ms_per_req"]
            }
            per["ratio proxy/go-proxy rps"] = {
                "value": per["proxy"]["rps"] / per["go-proxy"]["rps"]
            }
        if "nginx-proxy" in per and "direct" in per:
            per["nginx-proxy added p50 ms"] = {
                "value": per["nginx-proxy"]["p50_ms"] - per["direct"]["p50_ms"]
            }
        out[f"c={c}"] = per
    return out
