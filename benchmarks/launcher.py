"""What the go-ahead launcher adds to an upstream's start (SPEC 6.4, no orphan in the fork window).

Spawns a command that exits at once, ``ROUNDS`` times each way, interleaved (so both share the
machine's noise): plainly (``spawn``) and held by the launcher, released at once
(``spawn_gated`` + ``GoAhead.send``). The figure is spawn-to-exit wall time; the difference is the
``/bin/sh`` exec the launcher adds. Run: ``python -m benchmarks.launcher [ROUNDS]``.
"""

from __future__ import annotations

import statistics
import sys

import trio

from llama_swap_trio.upstream.process import child_env, spawn, spawn_gated

ARGV = ["/bin/true"]


async def close_pipes(proc: trio.Process) -> None:
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            await stream.aclose()


async def plain() -> float:
    started = trio.current_time()
    proc = await spawn(ARGV, child_env({}))
    await proc.wait()
    await close_pipes(proc)
    return trio.current_time() - started


async def gated() -> float:
    started = trio.current_time()
    proc, go_ahead = await spawn_gated(ARGV, child_env({}))
    go_ahead.send()
    await proc.wait()
    await close_pipes(proc)
    return trio.current_time() - started


async def main(rounds: int) -> None:
    times: dict[str, list[float]] = {"plain": [], "launcher": []}
    for _ in range(rounds):
        times["plain"].append(await plain())
        times["launcher"].append(await gated())
    for name, values in times.items():
        values.sort()
        print(
            f"{name:9s} median {statistics.median(values) * 1000:6.2f} ms  "
            f"p90 {values[int(len(values) * 0.9)] * 1000:6.2f} ms  ({rounds} starts)"
        )
    added = statistics.median(times["launcher"]) - statistics.median(times["plain"])
    print(f"the launcher adds {added * 1000:.2f} ms per start (median)")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 50)
