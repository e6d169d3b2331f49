"""Profile the daemon under load with py-spy: ``python -m benchmarks.profile warm|stream``.

Starts the same setup as the benchmark, puts load on it (wrk at 10 connections for ``warm``; 100
paced SSE streams for ``stream``), records the daemon with ``py-spy record --format raw`` and
prints the functions with the most samples, by own time and including callees. The collapsed
stacks are kept in ``benchmarks/results/profile-<label>-<what>.txt`` (flamegraph.pl input).

``--gil``: only samples where the daemon holds the GIL, i.e. Python work. Without it, on this busy
shared machine about half the samples land inside ``send()``: the sender is preempted in the
syscall when it wakes the receiver, which is waiting for a CPU, not CPU spent by the daemon.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import threading
from pathlib import Path

import trio

from benchmarks import stream, warm
from benchmarks.procs import Procs
from benchmarks.run import RESULTS


def top(collapsed: Path, n: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    out = [f"{samples} samples", "", "own time:"]
    out += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(n)]
    out += ["", "including callees:"]
    out += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["warm", "stream"])
    p.add_argument("--label", default="run")
    p.add_argument("--seconds", type=int, default=10)
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{args.label}-{args.what}.txt"
    with Procs() as procs:
        if args.what == "warm":
            up, _ = procs.nginx_upstream()
            port, pids = procs.daemon(warm.bench_config(up), ready_model="bench")
            lua = procs.dir / "post.lua"
            lua.write_text(warm.LUA)

            def load() -> None:
                warm.run_wrk(port, 10, args.seconds + 2, lua)
        else:
            up = procs.sse_upstream()
            port, pids = procs.daemon(stream.bench_config(up), ready_model="bench")

            def load() -> None:
                events = int((args.seconds + 2) * 50)
                trio.run(stream.paced, port, 100, events, 0.02)

        loader = threading.Thread(target=load)
        loader.start()
        subprocess.run(
            [
                "py-spy",
                "record",
                "--pid",
                str(pids[0]),
                "--duration",
                str(args.seconds),
                "--format",
                "raw",
                "--output",
                str(out),
                "--gil",
                "--rate",
                "250",
            ],
            check=True,
            capture_output=True,
        )
        loader.join()
    print(top(out))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
