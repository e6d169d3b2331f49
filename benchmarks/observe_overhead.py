"""Issue 16: CPU per proxied request and per streamed event, this tree against a baseline.

``LST_BENCH_BASELINE_SRC=/tmp/before LST_BENCH_DAEMON_SRC=/tmp/after python -m
benchmarks.observe_overhead OUT.json``: warm at 1 and 10 connections (direct, proxy, baseline,
3 rounds of 4 s), then 100 paced streams and a 64 MiB bulk stream (3 rounds), side by side.
"""

from __future__ import annotations

import datetime
import json
import sys

from benchmarks import stream, warm
from benchmarks.procs import loadavg


def main() -> None:
    out: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_start": loadavg(),
    }
    only = ("direct", "proxy", "baseline")
    out["warm"] = warm.run(rounds=3, seconds=4, conns=(1, 10), only=only)["summary"]
    out["stream"] = stream.run(rounds=3, streams=(100,), bulk_mib=64)["summary"]
    out["load_end"] = loadavg()
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
