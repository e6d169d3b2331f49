"""Swaps on the real llama-server: the floor, llama-server's own router mode, and this daemon.

``python -m benchmarks.real_swap [--rounds N] [--swaps N] [--sizes tiny,mid] [--label NAME]``

llama-server and the models come from ``scripts/real_llama.py`` (``--bench`` for the ~400 MB
``mid`` models). Three ways to serve two models of which one is resident at a time, measured in
alternating rounds (the order rotates each round, so machine noise hits all alike):

- ``floor``: what any swapping proxy must pay at least. The benchmark itself SIGTERMs the running
  llama-server's process group and waits for it, spawns the other, polls ``/health`` every 5 ms on
  fresh connections and sends the request on a fresh connection.
- ``router``: ``llama-server --models-dir DIR --models-max 1`` with the same options, the two
  models as files in DIR; the client keeps one keep-alive connection, as SDKs do.
- ``daemon``: llama-swap-trio with the two models as llama-server commands in one swap group; the
  same keep-alive client.

Per swap the client's time for a request (``max_tokens`` 1) that needs the other model. Also, per
target: the API unload of a loaded model (``daemon``: ``POST /api/models/unload/{m}``, which
returns once the process is gone; ``router``: ``POST /models/unload`` then polling ``/models``
until it says ``unloaded``; ``floor``: the server's own exit time, SIGTERM to reaped, no client
connection open); the cold first request (nothing loaded); and the time to the first token of a
200-token stream to a loaded model (``floor`` is then the server directly).

For the daemon the feed's ``model_state`` times give the steps of each swap (the old server's
``stopping`` -> ``stopped``, the new one's ``starting`` -> ``ready``), so a miss shows where the
time goes. Every process listens on 127.0.0.1 and is killed group-wide at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.procs import ROOT, Procs, free_port, loadavg, machine

RESULTS = Path(__file__).resolve().parent / "results"
PROBE_INTERVAL = 0.005
SERVER_OPTS = ["--ctx-size", "512", "--no-webui", "--threads", "1"]


def chat(model: str, *, stream: bool = False, max_tokens: int = 1) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def built(sizes: list[str]) -> dict[str, str]:
    argv = [sys.executable, str(ROOT / "scripts" / "real_llama.py")]
    if "mid" in sizes:
        argv.append("--bench")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def model_files(paths: dict[str, str], size: str) -> dict[str, str]:
    if size == "tiny":
        return {"tiny-a": paths["LLAMA_MODEL_A"], "tiny-b": paths["LLAMA_MODEL_B"]}
    return {"mid-a": paths["LLAMA_MODEL_MID_A"], "mid-b": paths["LLAMA_MODEL_MID_B"]}


def healthy(port: int) -> bool:
    """One ``GET /health`` on a fresh connection: 200 or not (refused, 503, ...)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Floor:
    """The benchmark as its own ideal proxy: stop, start, poll every 5 ms, send."""

    def __init__(self, procs: Procs, server: str, files: dict[str, str]) -> None:
        self.procs, self.server, self.files = procs, server, files
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.running: str | None = None
        self._count = 0

    def argv(self, model: str) -> list[str]:
        return [self.server, "--host", "127.0.0.1", "--port", str(self.port), "--model",
                self.files[model], "--alias", model, *SERVER_OPTS]  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()
            self.proc, self.running = None, None

    def start(self, model: str) -> None:
        self._count += 1
        self.proc = self.procs.spawn(self.argv(model), f"floor-{self._count}")
        deadline = time.monotonic() + 120
        while not healthy(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(self.procs.log_text(f"floor-{self._count}"))
            time.sleep(PROBE_INTERVAL)
        self.running = model

    def request(self, model: str) -> None:
        if self.running != model:
            self.stop()
            self.start(model)
        with httpx.Client(trust_env=False, timeout=60) as fresh:  # no idle connection kept
            answer = fresh.post(f"http://127.0.0.1:{self.port}/v1/chat/completions",
                                json=chat(model), headers={"connection": "close"})  # fmt: skip
            answer.raise_for_status()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Served:
    """The router or the daemon: one keep-alive client, as an SDK would hold."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, trust_env=False, timeout=120)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST, once more on a fresh connection if the server had closed an idle one (the
        router's cpp-httplib closes keep-alive connections after 5 s; httpx never retries)."""
        try:
            response = self.client.post(path, **kwargs)
        except httpx.RemoteProtocolError:
            response = self.client.post(path, **kwargs)
        return response.raise_for_status()

    def request(self, model: str) -> None:
        self.post("/v1/chat/completions", json=chat(model))


def start_router(procs: Procs, server: str, files: dict[str, str]) -> Served:
    models_dir = procs.dir / f"router-models-{'-'.join(files)}"
    models_dir.mkdir()
    for name, path in files.items():
        (models_dir / f"{name}.gguf").symlink_to(path)
    port = free_port()
    argv = [server, "--host", "127.0.0.1", "--port", str(port), "--models-dir", str(models_dir),
            "--models-max", "1", *SERVER_OPTS]  # fmt: skip
    procs.spawn(argv, f"router-{'-'.join(files)}")
    deadline = time.monotonic() + 60
    while not healthy(port):
        if time.monotonic() > deadline:
            raise RuntimeError(procs.log_text(f"router-{'-'.join(files)}"))
        time.sleep(0.02)
    return Served(f"http://127.0.0.1:{port}")


def daemon_config(server: str, files: dict[str, str]) -> str:
    lines = ['log_level = "info"', f"start_port = {free_port()}", "health_check_timeout = 120"]
    for name, path in files.items():
        cmd = [server, "--host", "127.0.0.1", "--port", "${PORT}", "--model", path, "--alias",
               name, *SERVER_OPTS]  # fmt: skip
        lines += [f'[models."{name}"]', f"cmd = {json.dumps(' '.join(cmd))}"]
    return "\n".join(lines) + "\n"


#: the daemon's per-step times of a swap (:meth:`Feed.steps`)
STEPS = ("stop_ms", "start_ms", "reaction_ms", "until_listening_ms", "listening_to_ready_ms")


class Feed:
    """The daemon's ``model_state`` events (SSE), read in a thread, for the per-step times; and
    when each event, and each model's ``listening`` log line, reached this reader."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        #: (unix time of arrival here, model, "starting" | "listening" | "ready")
        self.arrivals: list[tuple[float, str, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        with (
            httpx.Client(trust_env=False, timeout=None) as client,
            client.stream("GET", url + "/api/events?logs=1") as response,
        ):
            for line in response.iter_lines():
                if self._stop:
                    return
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    kind = event.get("type")
                    if kind == "model_state":
                        self.events.append(event)
                        if event["state"] in ("starting", "ready"):
                            self.arrivals.append((time.time(), event["model"], event["state"]))
                    elif kind == "log" and "listening on" in event.get("line", ""):
                        self.arrivals.append((time.time(), event.get("model", ""), "listening"))

    def steps(self, since: float) -> dict[str, float]:
        """Stop and start durations (ms) of the swap that began at unix time ``since``."""
        mine = [e for e in self.events if e["at"] >= since]
        out: dict[str, float] = {}
        at = {(e["model"], e["state"]): e["at"] for e in mine}
        for (model, state), t in at.items():
            if state == "stopped" and (model, "stopping") in at:
                out["stop_ms"] = 1000 * (t - at[(model, "stopping")])
            if state == "ready" and (model, "starting") in at:
                out["start_ms"] = 1000 * (t - at[(model, "starting")])
        starting = [t for (m, s), t in at.items() if s == "stopping"]
        if starting:
            out["reaction_ms"] = 1000 * (min(starting) - since)
        # The start split at the server's own "listening on" line (its output, as it arrived):
        # before it, llama-server's own start; after it, the time until the probe saw it ready.
        seen = {(m, s): t for t, m, s in self.arrivals if t >= since}
        for (model, state), t in seen.items():
            if state == "listening" and (model, "starting") in seen and (model, "ready") in seen:
                out["until_listening_ms"] = 1000 * (t - seen[(model, "starting")])
                out["listening_to_ready_ms"] = 1000 * (seen[(model, "ready")] - t)
        return out


def unload(target: str, system: Any, model: str) -> float:
    """Milliseconds to unload ``model`` (loaded, after a request) the target's way."""
    system.request(model)
    t0 = time.monotonic()
    if target == "floor":
        system.stop()  # SIGTERM to reaped, no connection open: the server's own exit time
    elif target == "daemon":
        system.post(f"/api/models/unload/{model}")
    else:
        system.post("/models/unload", json={"model": model})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = system.client.get("/models").json()["data"]
            if all(m["status"]["value"] == "unloaded" for m in data if m["id"] == model):
                break
            time.sleep(PROBE_INTERVAL)
    return 1000 * (time.monotonic() - t0)


def ttft(url: str, model: str, client: httpx.Client) -> float:
    """Milliseconds to the first content token of a 200-token stream.

    A just-started llama-server now and then closes a new connection without answering (seen
    on the floor's own server, under load): that one try is repeated, once."""
    try:
        return _ttft(url, model, client)
    except httpx.RemoteProtocolError:
        return _ttft(url, model, client)


def _ttft(url: str, model: str, client: httpx.Client) -> float:
    t0 = time.monotonic()
    body = chat(model, stream=True, max_tokens=200)
    with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        first = None
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"content":"' in line:
                first = time.monotonic()
        assert first is not None, "no token came"
    return 1000 * (first - t0)


def unload_all(target: str, system: Any, files: dict[str, str]) -> None:
    if target == "floor":
        system.stop()
    elif target == "daemon":
        system.post("/api/models/unload")
    else:
        for model in files:
            with contextlib.suppress(httpx.HTTPStatusError):  # 400: that one was not loaded
                system.post("/models/unload", json={"model": model})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = system.client.get("/models").json()["data"]
            if all(m["status"]["value"] == "unloaded" for m in data):
                return
            time.sleep(0.01)


def run(rounds: int, swaps: int, sizes: list[str]) -> dict[str, Any]:
    paths = built(sizes)
    server = paths["LLAMA_SERVER"]
    rows: list[dict[str, Any]] = []
    with Procs() as procs:
        for size in sizes:
            files = model_files(paths, size)
            names = list(files)
            port, _ = procs.daemon(daemon_config(server, files), name=f"daemon-{size}")
            daemon = Served(f"http://127.0.0.1:{port}")
            feed = Feed(daemon.url)
            systems: dict[str, Any] = {
                "floor": Floor(procs, server, files),
                "router": start_router(procs, server, files),
                "daemon": daemon,
            }
            targets = list(systems)
            for r in range(rounds):
                k = r % len(targets)
                for target in targets[k:] + targets[:k]:
                    system = systems[target]

                    where = {"size": size, "target": target, "round": r}

                    def add(
                        kind: str, ms: float, where: dict[str, Any] = where, **extra: float
                    ) -> None:
                        rows.append({**where, "kind": kind, "ms": ms, **extra})

                    t0 = time.monotonic()
                    system.request(names[0])  # the cold first request
                    add("cold", 1000 * (time.monotonic() - t0))
                    for i in range(swaps):
                        since, t0 = time.time(), time.monotonic()
                        system.request(names[(i + 1) % 2])
                        steps = feed.steps(since) if target == "daemon" else {}
                        add("swap", 1000 * (time.monotonic() - t0), **steps)
                    unloaded = unload(target, system, names[0])
                    add("unload", unloaded)
                    system.request(names[0])
                    with httpx.Client(trust_env=False, timeout=120) as client:
                        for _ in range(3):
                            add("ttft", ttft(system.url, names[0], client))
                    unload_all(target, system, files)
                    print(
                        f"  {size} {target:<7} round {r}: swap p50 "
                        f"{median(rows, size, target, 'swap', r):.0f} ms, unload {unloaded:.0f} ms",
                        flush=True,
                    )
            feed._stop = True
    return {"rows": rows, "summary": summarize(rows)}


def median(rows: list[dict[str, Any]], size: str, target: str, kind: str, r: int) -> float:
    return statistics.median(
        x["ms"]
        for x in rows
        if (x["size"], x["target"], x["kind"], x["round"]) == (size, target, kind, r)
    )


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sorted({r["size"] for r in rows}):
        per: dict[str, Any] = {}
        for target in ("floor", "router", "daemon"):
            mine = [r for r in rows if r["size"] == size and r["target"] == target]
            if not mine:
                continue
            entry: dict[str, Any] = {}
            for kind in ("swap", "cold", "unload", "ttft"):
                values = sorted(r["ms"] for r in mine if r["kind"] == kind)
                if values:
                    entry[f"{kind}_p50_ms"] = statistics.median(values)
                    entry[f"{kind}_n"] = len(values)
            if target == "floor":
                swaps = sorted(r["ms"] for r in mine if r["kind"] == "swap")
                entry["swap_p95_ms"] = swaps[int(0.95 * (len(swaps) - 1))]
            for step in STEPS:
                values = [r[step] for r in mine if r["kind"] == "swap" and step in r]
                if values:
                    entry[f"swap_{step[:-3]}_p50_ms"] = statistics.median(values)
            per[target] = entry
        if "floor" in per and "daemon" in per:
            per["daemon minus floor, swap p50 ms"] = (
                per["daemon"]["swap_p50_ms"] - per["floor"]["swap_p50_ms"]
            )
            per["daemon minus server exit, unload p50 ms"] = (
                per["daemon"]["unload_p50_ms"] - per["floor"]["unload_p50_ms"]
            )
            per["daemon minus direct, ttft p50 ms"] = (
                per["daemon"]["ttft_p50_ms"] - per["floor"]["ttft_p50_ms"]
            )
        out[size] = per
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--swaps", type=int, default=10, help="swaps per target per round")
    p.add_argument("--sizes", default="tiny,mid", help="tiny, mid or both (comma-separated)")
    p.add_argument("--label", default="run")
    args = p.parse_args()
    started = time.time()
    load_start = loadavg()
    result = run(args.rounds, args.swaps, args.sizes.split(","))
    result["meta"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "wall_seconds": round(time.time() - started, 1),
        "command": f"python -m benchmarks.real_swap --rounds {args.rounds} --swaps {args.swaps} "
        f"--sizes {args.sizes} --label {args.label}",
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.label}-real-swap.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
