"""Sleep: a swap that wakes a sleeping model against one that cold-starts it (SPEC 6.7).

One daemon, two groups of two demo upstreams (``llama-swap-trio demo-upstream``), every model
taking ``startup_delay`` seconds to start, as a server loading its weights would:

- ``sleep``: ``a`` and ``b`` run ``--sleep-mode`` and have ``models.<id>.sleep`` configured, so
  each swap puts the old one to sleep (``POST /sleep``) and wakes the new one (``POST /wake_up``,
  which the demo answers after its ``--wake-delay`` of 50 ms);
- ``cold``: ``c`` and ``d`` have no sleep mode, so each swap stops the old one (SIGTERM) and starts
  the new one (a new interpreter, then ``startup_delay``).

Swaps of the two kinds alternate in one run (a, c, b, d, ...), so both see the same machine. Each
figure is the client's request time for the first request after the swap (a short completion).
The first swap of each model is a cold start in both groups and is left out.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import httpx

from benchmarks.procs import Procs


def _demo(model: str, startup_delay: float, sleep: bool) -> str:
    argv = [sys.executable, "-m", "llama_swap_trio", "demo-upstream", "--port", "${PORT}"]
    argv += ["--model-id", model, "--startup-delay", f"{startup_delay}", "--tokens-per-second", "0"]
    if sleep:
        argv.append("--sleep-mode")
    return " ".join(argv)


def config(startup_delay: float) -> str:
    text = """
log_level = "warn"
log_to_stdout = "none"
health_check_timeout = 60

[routing.groups.sleep]
exclusive = false
members = ["a", "b"]

[routing.groups.cold]
exclusive = false
members = ["c", "d"]
"""
    for model, sleep in (("a", True), ("b", True), ("c", False), ("d", False)):
        text += f'\n[models.{model}]\ncmd = "{_demo(model, startup_delay, sleep)}"\n'
        if sleep:
            text += 'sleep = { sleep = "POST /sleep?level=1", wake = "POST /wake_up" }\n'
    return text


def run(swaps: int = 6, startup_delay: float = 1.0) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    times: dict[str, list[float]] = {"sleep": [], "cold": []}
    with Procs() as procs:
        port, _ = procs.daemon(config(startup_delay))
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with httpx.Client(trust_env=False, timeout=120) as client:
            for model in "abcd":  # first starts: cold everywhere, not counted
                client.post(url, json={**body, "model": model}).raise_for_status()
            for i in range(swaps):
                for kind, model in (("sleep", "ab"[i % 2]), ("cold", "cd"[i % 2])):
                    t0 = time.monotonic()
                    client.post(url, json={**body, "model": model}).raise_for_status()
                    times[kind].append((time.monotonic() - t0) * 1000)
    summary: dict[str, Any] = {"swaps": swaps, "startup_delay_s": startup_delay}
    for kind, values in times.items():
        ordered = sorted(values)
        summary[f"{kind}_swap_ms"] = {
            "p50": round(statistics.median(values), 1),
            "max": round(ordered[-1], 1),
        }
    summary["cold/sleep p50"] = round(
        summary["cold_swap_ms"]["p50"] / summary["sleep_swap_ms"]["p50"], 1
    )
    return {"runs": times, "summary": summary}
