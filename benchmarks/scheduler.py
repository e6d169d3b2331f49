"""The pure scheduler's CPU per request, this tree against a baseline tree, side by side.

``python -m benchmarks.scheduler [--rounds N] [--requests N]`` times, in fresh interpreters that
alternate between the trees, the scheduler calls one request makes on the paths that matter:

- ``fast``: a request for a ready model that needs nothing evicted (``request`` then
  ``serve_done``), the path every request to a loaded model takes;
- ``busy``: the same with one request queued for another model behind it (the queue is not empty,
  so the starvation guard, the reasons of the queue and the next deadline are computed);
- ``swap``: a request that loads a model, evicting the other (``request``, ``load_done``,
  ``serve_done``).

The baseline is ``LST_BENCH_BASELINE_SRC`` (a ``git archive`` of the revision to compare). Each
figure is the median over the rounds of microseconds per request. Only the scheduler runs: the
end-to-end CPU per request is ``python -m benchmarks.run warm``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CONFIG = """
[models.a]
cmd = "srv --port ${PORT}"
[models.b]
cmd = "srv --port ${PORT}"
"""

#: runs in the child interpreter, with the tree under test first on sys.path
CHILD = r"""
import inspect, json, sys, time
from llama_swap_trio.config import load_config_text
from llama_swap_trio.routing.scheduler import Scheduler
from llama_swap_trio.routing.swappers import swapper_for

class Fx:
    def grant(self, rid, model, load_seconds): return True
    def refuse(self, rid, error): pass
    def progress(self, rid, progress): pass
    def start_load(self, target, evict, explanation): pass
    def queue_changed(self, queue): pass
    def in_flight_changed(self, model, count): pass

config = load_config_text(CONFIG, environ={})
kwargs = {}
if "clock" in inspect.signature(Scheduler).parameters:  # as the router builds it
    kwargs = {"clock": time.monotonic, "starvation_after": config.routing.starvation_after}
n = int(sys.argv[1])

def make():
    return Scheduler(config.models, swapper_for(config), Fx(), **kwargs)

def ready(s, model, rid):
    s.request(rid, model)
    s.load_done(model, None, 1.0)
    s.serve_done(rid)

def fast():
    s = make(); ready(s, "a", 0)
    t = time.process_time()
    for rid in range(1, n + 1):
        s.request(rid, "a"); s.serve_done(rid)
    return time.process_time() - t

def busy():
    s = make(); ready(s, "a", 0)
    s.request(-1, "a")          # in flight on a, so b must wait
    s.request(-2, "b")          # queued behind it
    t = time.process_time()
    for rid in range(1, n + 1):
        s.request(rid, "a"); s.serve_done(rid)
    return time.process_time() - t

def swap():
    s = make(); ready(s, "a", 0)
    m = n // 10
    t = time.process_time()
    for rid in range(1, m + 1):
        model = "b" if rid % 2 else "a"
        s.request(rid, model); s.load_done(model, None, 1.0); s.serve_done(rid)
    return (time.process_time() - t) * 10

paths = (("fast", fast), ("busy", busy), ("swap", swap))
print(json.dumps({name: f() / n * 1e6 for name, f in paths}))
"""


def measure(src: str, requests: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src}
    code = "CONFIG = " + repr(CONFIG) + "\n" + CHILD
    out = subprocess.run(
        [sys.executable, "-c", code, str(requests)],
        env=env,
        cwd=src,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=50_000)
    args = p.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"now": here}
    baseline = os.environ.get("LST_BENCH_BASELINE_SRC")
    if baseline:
        trees["baseline"] = baseline
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_no in range(args.rounds):
        order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
        for name in order:
            results[name].append(measure(trees[name], args.requests))
    paths = ("fast", "busy", "swap")
    print(f"us per request, median of {args.rounds} rounds of {args.requests} requests")
    print("| path | " + " | ".join(trees) + (" | now / baseline |" if baseline else " |"))
    print("| --- " * (len(trees) + 1 + bool(baseline)) + "|")
    for path in paths:
        medians = {name: statistics.median(r[path] for r in results[name]) for name in trees}
        row = f"| {path} | " + " | ".join(f"{medians[n]:.2f}" for n in trees)
        if baseline:
            row += f" | {medians['now'] / medians['baseline']:.3f}"
        print(row + " |")


if __name__ == "__main__":
    main()
