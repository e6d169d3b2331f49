"""Entry point: ``python -m benchmarks.run WHAT [--label NAME] [--quick]``.

WHAT is ``warm``, ``stream``, ``swap``, ``memory``, ``sleep`` or ``all``.

Prints each measurement as it is taken and writes everything (figures, load average, machine) to
``benchmarks/results/<label>-<what>.json``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import memory, sleep, stream, swap, warm
from benchmarks.procs import DAEMON_SRC, loadavg, machine

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("what", choices=["warm", "stream", "swap", "memory", "sleep", "all"])
    p.add_argument("--label", default="run", help="name of the results files")
    p.add_argument("--quick", action="store_true", help="short runs, one round (a smoke test)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    args = p.parse_args()
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    jobs = ["warm", "stream", "swap", "memory", "sleep"] if args.what == "all" else [args.what]
    RESULTS.mkdir(exist_ok=True)
    for job in jobs:
        print(f"== {job}  (load average {loadavg()})", flush=True)
        started = time.time()
        result: dict[str, Any]
        if job == "warm":
            result = warm.run(rounds=rounds, seconds=seconds)
        elif job == "stream":
            result = stream.run(rounds=rounds, quick=args.quick)
        elif job == "swap":
            result = swap.run(swaps=6 if args.quick else 20)
        elif job == "sleep":
            result = sleep.run(swaps=3 if args.quick else 6)
        else:
            result = memory.run()
        result["meta"] = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "loadavg_start": loadavg(),
            "wall_seconds": round(time.time() - started, 1),
            "daemon_source": str(DAEMON_SRC),
            "command": f"python -m benchmarks.run {job} --label {args.label}"
            + (" --quick" if args.quick else "")
            + (f" --rounds {args.rounds}" if args.rounds != 3 and not args.quick else "")
            + (f" --seconds {args.seconds:g}" if args.seconds != 5.0 and not args.quick else ""),
        }
        path = RESULTS / f"{args.label}-{job}.json"
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(json.dumps(result.get("summary", {}), indent=1, default=str))
        print(f"-> {path}", flush=True)


if __name__ == "__main__":
    main()
