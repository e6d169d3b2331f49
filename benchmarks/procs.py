"""Starting and measuring the processes a benchmark needs: nginx, the daemon, the hello app.

Everything listens on 127.0.0.1 only. Every process is started in its own process group and
killed (group-wide) by :class:`Procs` on exit, so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
#: where ``python -m llama_swap_trio`` runs from: this checkout, or another one to compare against
#: (e.g. ``git archive <rev> | tar -x -C /tmp/rev`` and ``LST_BENCH_DAEMON_SRC=/tmp/rev``)
DAEMON_SRC = Path(os.environ.get("LST_BENCH_DAEMON_SRC", ROOT)).resolve()
#: a second checkout measured in the same run as target ``baseline`` (warm and stream), so that
#: before/after figures share the same machine noise
BASELINE_SRC = os.environ.get("LST_BENCH_BASELINE_SRC")
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: a small, realistic non-streaming chat completion answer (what the fast upstream returns)
CHAT_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you '
    'today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,'
    '"total_tokens":18}}'
)
#: the request every warm benchmark sends
CHAT_REQUEST = '{"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far, in seconds."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


GOPROXY_SRC = ROOT / "benchmarks" / "goproxy"


def cache_dir() -> Path:
    """Where benchmark builds are kept (the same cache as scripts/real_llama.py)."""
    env = os.environ.get("LLAMA_SWAP_TRIO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llama-swap-trio"


def build_goproxy() -> Path | None:
    """Build ``benchmarks/goproxy`` (standard library only) if needed; None without ``go``."""
    go = shutil.which("go")
    if go is None:
        return None
    binary = cache_dir() / "bin" / "goproxy"
    newest = max(f.stat().st_mtime for f in GOPROXY_SRC.iterdir())
    if not binary.exists() or binary.stat().st_mtime < newest:
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [go, "build", "-o", str(binary), "."], cwd=GOPROXY_SRC, check=True, timeout=300
        )
    return binary


class Procs:
    """Owns the processes of one benchmark run; kills their groups on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lst-bench-"))
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def spawn(self, argv: list[str], name: str, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        log.close()
        self._procs.append(proc)
        return proc

    def log_text(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    # -- nginx --------------------------------------------------------------------------------

    def nginx(self, name: str, server: str) -> tuple[int, list[int]]:
        """An nginx with one worker and one ``server`` block (``{port}`` is filled in).

        Returns the port and the pids (master and worker) to measure CPU on.
        """
        port = free_port()
        root = self.dir / name
        root.mkdir()
        conf = root / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    {server.replace("{port}", str(port))}
}}
"""
        )
        proc = self.spawn(["nginx", "-c", str(conf), "-e", str(root / "error.log")], name)
        wait_port(port)
        return port, [proc.pid, *children(proc.pid)]

    def nginx_upstream(self) -> tuple[int, list[int]]:
        """The fast upstream: a fixed chat completion for every path, 200 on ``/health``."""
        body = CHAT_BODY.replace("'", "\\'")
        return self.nginx(
            "upstream",
            f"""server {{
        listen 127.0.0.1:{{port}} backlog=4096;
        location = /health {{ return 200 'OK'; }}
        location / {{ default_type application/json; return 200 '{body}'; }}
    }}""",
        )

    def nginx_proxy(self, upstream_port: int) -> tuple[int, list[int]]:
        """nginx as a reference reverse proxy in front of the fast upstream (keep-alive pool)."""
        return self.nginx(
            "refproxy",
            f"""upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{{port}} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}""",
        )

    # -- the Go hop ---------------------------------------------------------------------------

    def goproxy(self, upstream_port: int) -> tuple[int, list[int]] | None:
        """The Go reverse proxy of ``benchmarks/goproxy`` in front of ``upstream_port``.

        None when no Go toolchain is installed (Debian: ``apt-get install golang-go``). It is built
        once into the benchmark cache and rebuilt when its source is newer.
        """
        binary = build_goproxy()
        if binary is None:
            return None
        port = free_port()
        proc = self.spawn(
            [
                str(binary),
                "-listen",
                f"127.0.0.1:{port}",
                "-upstream",
                f"bench=http://127.0.0.1:{upstream_port}",
            ],
            "goproxy",
        )
        wait_port(port)
        return port, [proc.pid]

    # -- Python servers -------------------------------------------------------------------------

    def hello(self) -> tuple[int, list[int]]:
        """The raw-ASGI hello app on hypercorn's trio worker (our stack's ceiling)."""
        port = free_port()
        proc = self.spawn([sys.executable, "-m", "benchmarks.hello", "--port", str(port)], "hello")
        wait_port(port)
        return port, [proc.pid]

    def sse_upstream(self) -> int:
        port = free_port()
        self.spawn([sys.executable, "-m", "benchmarks.sse_upstream", "--port", str(port)], "sse")
        wait_port(port)
        return port

    def daemon(
        self,
        config: str,
        *,
        name: str = "daemon",
        ready_model: str | None = None,
        src: str | None = None,
    ) -> tuple[int, list[int]]:
        """The daemon on ``config`` (TOML text); waits until it listens (and ``ready_model``)."""
        port = free_port()
        path = self.dir / f"{name}.toml"
        path.write_text(config)
        proc = self.spawn(
            [
                sys.executable,
                "-m",
                "llama_swap_trio",
                "serve",
                "--config",
                str(path),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            name,
            cwd=DAEMON_SRC if src is None else Path(src),
        )
        try:
            wait_port(port)
        except TimeoutError:
            raise RuntimeError(self.log_text(name)) from None
        if ready_model is not None:
            with httpx.Client(trust_env=False, timeout=30) as client:
                client.post(f"http://127.0.0.1:{port}/api/models/load/{ready_model}")
        return port, [proc.pid]


@contextlib.contextmanager
def quiet_cpu(pids: list[int]) -> Iterator[list[float]]:
    """Measure CPU seconds of ``pids`` over the block: ``with quiet_cpu(p) as out: ...; out[0]``."""
    out: list[float] = []
    before = cpu_seconds(pids)
    yield out
    out.append(cpu_seconds(pids) - before)
