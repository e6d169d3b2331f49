"""Swap: alternating requests to two models whose servers take a known time to become healthy.

Both models run ``benchmarks/swap_server.py`` (``python -I -S``, standard library built-ins
only), which turns healthy exactly ``healthy_after`` seconds after it starts and appends
``start``, ``healthy``, ``request`` (the first forwarded request it receives), ``sigterm`` and
``exit`` with ``time.monotonic()``, the clock the client uses too. Each request to the other model
makes the daemon stop the running one and start this one.

Per swap:

- ``total``: the client's request time;
- ``server``: the servers' own time: the old one's ``sigterm`` -> ``exit`` plus the new one's
  spawn -> ``healthy``. Spawn -> ``start`` (interpreter start-up) is not in the events file, so it
  is measured by running the same command directly right after each swap (``exec_ms``) and
  added;
- ``overhead`` = total - server: what the proxy adds (the reaction to the request, spawning,
  noticing readiness, forwarding the request and the answer);
- ``notice``: ``healthy`` -> the forwarded request reaches the new server (readiness noticed,
  request granted and forwarded);
- ``llama-swap cadence``: with a first probe 250 ms after spawn and then one every second, a server
  that is healthy S seconds after spawn is noticed at the first probe time >= S; the difference is
  what that cadence alone would add to the same swap.
"""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.procs import ROOT, Procs

SERVER = ROOT / "benchmarks" / "swap_server.py"
_EXEC_RUNS = itertools.count()


def server_argv(events: Path, healthy_after: float, port: str, name: str) -> list[str]:
    return [sys.executable, "-I", "-S", str(SERVER), port, f"{healthy_after}", str(events), name]


def exec_ms(procs: Procs, healthy_after: float, times: int = 5) -> float:
    """Median spawn -> ``start`` event time of the fake upstream, run directly."""
    samples = []
    for _ in range(times):
        events = procs.dir / f"exec-{next(_EXEC_RUNS)}.events"
        argv = server_argv(events, 60.0, "0", "x")
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (events.exists() and events.read_text()):
            time.sleep(0.001)
        start = float(events.read_text().split()[3])
        samples.append((start - t0) * 1000)
        proc.kill()
        proc.wait()
    return statistics.median(samples)


def llama_swap_notice_s(ready_after_spawn: float) -> float:
    """When llama-swap's cadence (first probe at 0.25 s, then every 1 s) sees a server healthy."""
    if ready_after_spawn <= 0.25:
        return 0.25
    return 0.25 + math.ceil(ready_after_spawn - 0.25)


def run(swaps: int = 20, healthy_after: float = 0.5) -> dict[str, Any]:
    with Procs() as procs:
        events = procs.dir / "swap.events"
        cmd = " ".join(server_argv(events, healthy_after, "${PORT}", "${MODEL_ID}"))
        config = f"""
log_level = "warn"
log_to_stdout = "none"
health_check_timeout = 30

[models.a]
cmd = "{cmd}"

[models.b]
cmd = "{cmd}"
"""
        port, _ = procs.daemon(config)
        exec_baseline = exec_ms(procs, healthy_after)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        windows = []
        with httpx.Client(trust_env=False, timeout=60) as client:
            client.post(url, json={"model": "a", "messages": []}).raise_for_status()
            for i in range(swaps):
                model = "b" if i % 2 == 0 else "a"
                t0 = time.monotonic()
                client.post(url, json={"model": model, "messages": []}).raise_for_status()
                t1 = time.monotonic()
                # the same request again, model warm: what forwarding alone costs right now
                client.post(url, json={"model": model, "messages": []}).raise_for_status()
                warm_s = time.monotonic() - t1
                # and the interpreter start-up of the server command right now (machine noise)
                exec_s = exec_ms(procs, healthy_after, times=1) / 1000
                windows.append((model, t0, t1, warm_s, exec_s))
        lines = [line.split() for line in events.read_text().splitlines()]
    rows = []
    for model, t0, t1, warm_s, exec_s in windows:
        old = "a" if model == "b" else "b"

        def at(name: str, who: str, t0: float = t0, t1: float = t1) -> float:
            found = [
                float(x[3])
                for x in lines
                if x[0] == name and x[1] == who and t0 <= float(x[3]) <= t1
            ]
            assert len(found) == 1, (name, who, found)
            return found[0]

        stop_s = at("exit", old) - at("sigterm", old)
        start_s = at("healthy", model) - at("start", model) + exec_s
        total = t1 - t0
        rows.append(
            {
                "total_ms": total * 1000,
                "server_stop_ms": stop_s * 1000,
                "server_start_ms": start_s * 1000,
                "overhead_ms": (total - stop_s - start_s) * 1000,
                "notice_ms": (at("request", model) - at("healthy", model)) * 1000,
                "warm_request_ms": warm_s * 1000,
                "exec_ms": exec_s * 1000,
                "llama_swap_cadence_ms": (llama_swap_notice_s(start_s) - start_s) * 1000,
                "request_to_sigterm_ms": (at("sigterm", old) - t0) * 1000,
                "exit_to_start_ms": (at("start", model) - at("exit", old)) * 1000,
            }
        )
    return {
        "runs": rows,
        "exec_ms": exec_baseline,
        "healthy_after_s": healthy_after,
        "summary": summarize(rows, exec_baseline),
    }


def summarize(rows: list[dict[str, Any]], exec_baseline: float) -> dict[str, Any]:
    def q(key: str, p: float) -> float:
        values = sorted(r[key] for r in rows)
        return values[min(len(values) - 1, int(p * len(values)))]

    out: dict[str, Any] = {"swaps": len(rows), "exec_ms (spawn->start, subtracted)": exec_baseline}
    for key in (
        "total_ms",
        "server_stop_ms",
        "server_start_ms",
        "overhead_ms",
        "notice_ms",
        "warm_request_ms",
        "exec_ms",
        "request_to_sigterm_ms",
        "exit_to_start_ms",
        "llama_swap_cadence_ms",
    ):
        out[key] = {"p50": statistics.median(r[key] for r in rows), "p95": q(key, 0.95)}
    return out
