"""A fake inference server for black-box tests: ``python tests/fakes/fake_upstream.py --port N``.

It stands in for llama-server and friends as a model's ``cmd``. It only needs the standard library
and ``h11`` (a dependency of httpx and hypercorn), and it uses plain threads rather than trio or
hypercorn because tests start many of them: from spawn to ``GET /health`` answering 200 took
0.11-0.18 s on the busy 2-core machine (hypercorn-trio costs ~0.3 s of imports alone).

Output (stdout, line-buffered and flushed, so log tests can wait for lines):

- ``fake upstream <model-id> pid <pid>`` first, then ``listening on 127.0.0.1:<port>`` once the
  socket listens (the real port, so ``--port 0`` works when a test runs it directly).
- ``request <METHOD> <target>`` for every HTTP request (so a proxy that stops draining the pipe
  makes requests hang, as a real server would).
- ``client disconnected`` whenever a client goes away before its streaming (or held) response
  ended. ``grandchild pid <n>``, ``received SIGTERM ...``, ``exiting ...`` where relevant.
- ``open client connections at SIGTERM: N`` on every SIGTERM: the connections whose client had not
  closed them when the signal came (llama-server's exit waits for such idle keep-alive ones).

Knobs (command-line options):

==============================  ===================================================================
``--port N``                    listen on 127.0.0.1:N (required; 0 picks a free port)
``--model-id ID``               the served model id (default ``fake``); appears in every answer
``--startup-delay S``           sleep S seconds before listening at all
``--healthy-after S``           ``/health`` answers 503 until S seconds after the process started
``--never-healthy``             ``/health`` always answers 503
``--flap-health S``             once healthy, ``/health`` alternates: S seconds 503, S seconds 200
                                (starting with 503), so a prober sees a server that comes and goes
``--exit-at-startup CODE``      print ``fatal: cannot load model ...`` lines to stdout and stderr,
                                then exit with CODE before listening
``--exit-after S``              exit S seconds after becoming ready (healthy), with ``--exit-code``
``--exit-code N``               exit code for ``--exit-after`` (default 0)
``--ignore-sigterm``            ignore SIGTERM (prints ``received SIGTERM, ignoring``)
``--sigterm-delay S``           on SIGTERM wait S seconds, then exit 0 (a slow graceful stop)
``--fork-grandchild``           spawn ``sleep 1000`` in the same process group, holding our
                                stdout/stderr; prints ``grandchild pid N``
``--pid-file PATH``             write our pid to PATH
``--events PATH``               append ``<event> <model-id> <pid> <time.monotonic()>`` lines to PATH
                                for events start, listening, ready, sigterm, exit
``--chatty-lines N``            print N log lines at startup, before listening
``--chatty-forever``            keep printing log lines from a thread (``--chatty-rate`` lines/s,
                                default 2000) to test that the proxy drains the pipe
``--tokens N``                  chunks in a streamed answer (default 5)
``--token-interval S``          pause between streamed chunks (default 0)
``--crash-mid-stream K``        ``os._exit(1)`` right after sending K chunks of a stream
``--no-response-head``          read ``/v1/*`` requests but never answer (until the client leaves)
``--echo-env NAMES``            comma-separated (or repeated) environment variable names to echo
==============================  ===================================================================

Per-request overrides: ``?status=NNN`` on any echo path answers NNN with an OpenAI-shaped error
body; body fields ``x_tokens`` and ``x_token_interval`` override ``--tokens``/``--token-interval``.

Endpoints:

- ``GET /health``: 200 ``OK`` (or 503 ``loading``, see above).
- ``GET /v1/models``: ``{"object": "list", "data": [{"id": <model-id>, ...}]}``.
- ``GET /debug/stats``: ``{"disconnects", "requests", "in_flight", "pid", "model_id"}``
  (``in_flight`` excludes the stats request itself; websocket sessions count as requests).
- ``GET /slow?chunks=N&interval=S&pad=P``: plain-text chunked stream of N lines ``chunk i``,
  each padded with P ``x`` characters (default 0), for big streams.
- ``GET /ws``: websocket echo of text and binary messages (answers pings, echoes close).
- ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` (also without ``/v1``,
  as llama-server) and ANY other method and
  path: a JSON echo ``{"model", "served_by", "path" (raw, percent-encoding kept), "query", "method",
  "headers" (lowercased; repeats joined with ", "), "body" (parsed JSON, else text), "body_bytes",
  "env"}``. Chat adds ``id, object, created, choices[0].message, usage, timings``; completions add
  ``choices[0].text``; embeddings add ``data[0].embedding``. With ``"stream": true`` in a JSON body
  the answer is SSE: ``--tokens`` ``chat.completion.chunk`` (or ``text_completion``) events whose
  text names the model id (``"<model-id> says token 0 "``), the last with ``finish_reason`` and
  ``usage``, then ``data: [DONE]``. ``usage`` is ``prompt_tokens`` = words in the prompt (at least
  1), ``completion_tokens`` = the number of tokens sent.

SIGTERM exits at once with code 0 (unless told otherwise above); SIGKILL is the only way past
``--ignore-sigterm``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import h11

START = time.monotonic()
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_print_lock = threading.Lock()
_stats_lock = threading.Lock()
_stats = {"disconnects": 0, "requests": 0, "in_flight": 0}
#: accepted sockets not yet closed by us (set.add/discard and list(set) are atomic under the GIL,
#: so the SIGTERM handler can read it without a lock that the interrupted main thread may hold)
_open_socks: set[socket.socket] = set()


def peers_still_open() -> int:
    """How many accepted connections the client has not closed (peeked, without reading)."""
    count = 0
    for sock in list(_open_socks):
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            count += 1  # nothing to read, no EOF: the client still holds it
            continue
        except OSError:
            continue
        if data:
            count += 1  # a request is waiting on it
    return count


def log(line: str) -> None:
    """Print one line to stdout and flush (blocks when the reader does not drain the pipe)."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def bump(key: str, delta: int = 1) -> None:
    with _stats_lock:
        _stats[key] += delta


class Fake:
    """Shared, read-only settings plus the event log; one per process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model_id: str = args.model_id
        self.pid = os.getpid()
        self.ready_at: float | None = None
        names: list[str] = []
        for item in args.echo_env or []:
            names.extend(n for n in item.split(",") if n)
        self.echo_env = names

    def event(self, name: str) -> None:
        if self.args.events:
            with open(self.args.events, "a") as f:
                f.write(f"{name} {self.model_id} {self.pid} {time.monotonic():.6f}\n")

    def healthy(self) -> bool:
        if self.args.never_healthy:
            return False
        since = time.monotonic() - START - float(self.args.healthy_after)
        if since < 0:
            return False
        period = float(self.args.flap_health or 0)
        return period <= 0 or int(since / period) % 2 == 1


# ---------------------------------------------------------------- low-level socket helpers


def client_gone(sock: socket.socket, wait: float) -> bool:
    """Wait up to ``wait`` seconds; True as soon as the peer closes or resets the connection.

    A readable socket whose peek returns b"" is at EOF. Data that is pending (a pipelined request)
    is left alone, and we simply sleep out the rest of the wait.
    """
    deadline = time.monotonic() + wait
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            readable, _, _ = select.select([sock], [], [], remaining)
            if readable:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    return True
                time.sleep(max(0.0, deadline - time.monotonic()))
                return False
        except OSError:
            return True
        if time.monotonic() >= deadline:
            return False


class Disconnected(Exception):
    """The client went away while we were answering."""


class Conn:
    """One client connection driven by h11, served by one thread."""

    def __init__(self, fake: Fake, sock: socket.socket) -> None:
        self.fake = fake
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER)
        self.method = "GET"

    def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise Disconnected from exc

    def next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                self.h11.receive_data(data)
                continue
            return event

    def serve(self) -> None:
        try:
            while True:
                event = self.next_event()
                if not isinstance(event, h11.Request):
                    return
                body = bytearray()
                while True:
                    ev = self.next_event()
                    if isinstance(ev, h11.Data):
                        body += ev.data
                    elif isinstance(ev, h11.EndOfMessage) or ev is h11.PAUSED:
                        break
                    else:
                        return
                bump("requests")
                bump("in_flight")
                try:
                    self.handle(event, bytes(body))
                finally:
                    bump("in_flight", -1)
                if self.h11.our_state is h11.SWITCHED_PROTOCOL:
                    return
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                else:
                    return
        except Disconnected:
            pass
        except h11.RemoteProtocolError:
            with contextlib.suppress(Exception):
                self.respond(400, b"bad request\n", "text/plain")
        finally:
            _open_socks.discard(self.sock)
            with contextlib.suppress(OSError):
                self.sock.close()

    # ------------------------------------------------------------------------ responses

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        headers += extra or []
        self.send(h11.Response(status_code=status, headers=headers))
        if self.method != "HEAD":
            self.send(h11.Data(data=body))
        self.send(h11.EndOfMessage())

    def respond_json(self, status: int, obj: Any) -> None:
        self.respond(status, json.dumps(obj).encode())

    def disconnected(self) -> None:
        bump("disconnects")
        log("client disconnected")

    def stream(self, content_type: str, pieces: Iterator[tuple[bytes, float]]) -> None:
        """Send a chunked response; each piece is (bytes, pause before it)."""
        self.send(
            h11.Response(
                status_code=200,
                headers=[("content-type", content_type), ("cache-control", "no-cache")],
            )
        )
        try:
            for data, pause in pieces:
                if pause > 0 and client_gone(self.sock, pause):
                    raise Disconnected
                self.send(h11.Data(data=data))
            self.send(h11.EndOfMessage())
        except Disconnected:
            self.disconnected()
            raise

    # ------------------------------------------------------------------------- routing

    def handle(self, req: h11.Request, body: bytes) -> None:
        self.method = req.method.decode()
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        log(f"request {self.method} {target}")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        headers: dict[str, str] = {}
        for name, value in req.headers:
            key = name.decode("latin-1").lower()
            val = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val

        if path == "/health":
            if self.fake.healthy():
                self.respond(200, b"OK", "text/plain")
            else:
                self.respond(503, b"loading", "text/plain")
        elif path == "/debug/stats":
            with _stats_lock:
                stats = dict(_stats, in_flight=_stats["in_flight"] - 1)
            self.respond_json(200, {**stats, "pid": self.fake.pid, "model_id": self.fake.model_id})
        elif self.fake.args.no_response_head and path.startswith("/v1/"):
            while not client_gone(self.sock, 3600):
                pass
            self.disconnected()
            raise Disconnected
        elif path == "/v1/models" and self.method == "GET":
            model = {"id": self.fake.model_id, "object": "model", "created": 0, "owned_by": "fake"}
            self.respond_json(200, {"object": "list", "data": [model]})
        elif path == "/slow":
            chunks = int(params.get("chunks", "5"))
            interval = float(params.get("interval", "0.1"))
            pad = "x" * int(params.get("pad", "0"))
            lines = ((f"chunk {i}{pad}\n".encode(), interval if i else 0.0) for i in range(chunks))
            self.stream("text/plain", lines)
        elif path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            self.websocket(headers)
        else:
            self.echo(path, query, params, headers, body)

    def echo(
        self, path: str, query: str, params: dict[str, str], headers: dict[str, str], body: bytes
    ) -> None:
        parsed: Any
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        fields = parsed if isinstance(parsed, dict) else {}
        model = fields.get("model") if isinstance(fields.get("model"), str) else self.fake.model_id
        answer: dict[str, Any] = {
            "model": model,
            "served_by": self.fake.model_id,
            "pid": self.fake.pid,
            "path": path,
            "query": query,
            "method": self.method,
            "headers": headers,
            "body": parsed,
            "body_bytes": len(body),
            "env": {name: os.environ.get(name) for name in self.fake.echo_env},
        }
        if "status" in params:
            error = {"message": "boom", "type": "fake_error", "code": None, "param": None}
            self.respond_json(int(params["status"]), {"error": error, **answer})
            return
        tokens = int(fields.get("x_tokens", self.fake.args.tokens))
        interval = float(fields.get("x_token_interval", self.fake.args.token_interval))
        usage = {
            "prompt_tokens": max(
                1, len(json.dumps(fields.get("messages", fields.get("prompt", ""))).split())
            ),
            "completion_tokens": tokens,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        timings = {
            "prompt_n": usage["prompt_tokens"],
            "predicted_n": tokens,
            "prompt_ms": 1.0,
            "predicted_ms": 10.0 * tokens,
            "predicted_per_second": 100.0,
        }
        kind = {
            "/v1/completions": "text_completion",
            "/completions": "text_completion",
            "/completion": "text_completion",
        }.get(path, "chat.completion")
        if path in ("/v1/embeddings", "/embeddings"):
            answer.update(
                object="list",
                data=[{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                usage={
                    "prompt_tokens": usage["prompt_tokens"],
                    "total_tokens": usage["prompt_tokens"],
                },
            )
            self.respond_json(200, answer)
            return
        words = [f"{self.fake.model_id} says token {i} " for i in range(tokens)]
        base = {"id": "fake-1", "created": int(time.time()), "model": model}
        if fields.get("stream") is True:
            self.stream("text/event-stream", self.sse(kind, base, words, interval, usage, timings))
            return
        text = "".join(words)
        if kind == "text_completion":
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop"}
        else:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
        answer.update(base, object=kind, choices=[choice], usage=usage, timings=timings)
        self.respond_json(200, answer)

    def sse(
        self,
        kind: str,
        base: dict[str, Any],
        words: list[str],
        interval: float,
        usage: dict[str, int],
        timings: dict[str, float],
    ) -> Iterator[tuple[bytes, float]]:
        crash_after = self.fake.args.crash_mid_stream
        obj = "text_completion" if kind == "text_completion" else "chat.completion.chunk"
        for i, word in enumerate(words):
            if crash_after is not None and i == crash_after:
                log(f"crashing mid-stream after {i} chunks")
                os._exit(1)
            last = i == len(words) - 1
            if kind == "text_completion":
                choice: dict[str, Any] = {"index": 0, "text": word}
            else:
                choice = {"index": 0, "delta": {"content": word}}
            choice["finish_reason"] = "stop" if last else None
            chunk: dict[str, Any] = {**base, "object": obj, "choices": [choice]}
            if last:
                chunk.update(usage=usage, timings=timings)
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n", interval if i else 0.0
        if crash_after is not None and crash_after >= len(words):
            log(f"crashing mid-stream after {len(words)} chunks")
            os._exit(1)
        yield b"data: [DONE]\n\n", 0.0

    # ------------------------------------------------------------------------ websocket

    def websocket(self, headers: dict[str, str]) -> None:
        import base64  # imported here: hashlib alone costs ~10 ms of every start
        import hashlib

        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    ("upgrade", "websocket"),
                    ("connection", "Upgrade"),
                    ("sec-websocket-accept", accept),
                ],
            )
        )
        buf = bytearray(self.h11.trailing_data[0])
        ws = WebSocket(self.sock, buf)
        try:
            ws.echo_loop()
        except (OSError, Disconnected):
            pass


class WebSocket:
    """The server side of RFC 6455, just enough to echo messages (no extensions)."""

    def __init__(self, sock: socket.socket, buf: bytearray) -> None:
        self.sock = sock
        self.buf = buf

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise Disconnected
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self.read_exact(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self.read_exact(8))
        mask = self.read_exact(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.read_exact(length)))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def write_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.sock.sendall(head + payload)

    def echo_loop(self) -> None:
        opcode, message = 0, bytearray()
        while True:
            fin, op, payload = self.read_frame()
            if op == 0x8:  # close: echo it back and stop
                self.write_frame(0x8, payload[:2])
                return
            if op == 0x9:
                self.write_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op != 0:
                opcode, message = op, bytearray()
            message += payload
            if fin:
                self.write_frame(opcode, bytes(message))


# ---------------------------------------------------------------------- process behaviour


def safe_note(line: str) -> None:
    """Print from a signal path without risking a deadlock on a full pipe or a held lock."""

    def write() -> None:
        with contextlib.suppress(OSError):
            os.write(1, (line + "\n").encode())

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(0.2)


def exit_now(fake: Fake, code: int, why: str) -> None:
    fake.event("exit")
    safe_note(f"exiting ({why}) with code {code}")
    os._exit(code)


def install_sigterm(fake: Fake) -> None:
    def on_sigterm(signum: int, frame: object) -> None:
        fake.event("sigterm")
        safe_note(f"open client connections at SIGTERM: {peers_still_open()}")
        if fake.args.ignore_sigterm:
            safe_note("received SIGTERM, ignoring")
            return
        delay = fake.args.sigterm_delay

        def later() -> None:
            safe_note(f"received SIGTERM, exiting in {delay}s")
            time.sleep(delay)
            exit_now(fake, 0, "SIGTERM")

        threading.Thread(target=later, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def chatty_forever(rate: float) -> None:
    n = 0
    while True:
        for _ in range(100):
            log(f"chatty forever line {n}: lorem ipsum dolor sit amet, consectetur adipiscing elit")
            n += 1
        time.sleep(100 / rate)


def watch_readiness(fake: Fake) -> None:
    """Mark the moment we become healthy; arm ``--exit-after`` from there."""
    while not fake.healthy():
        time.sleep(0.005)
    fake.event("ready")
    if fake.args.exit_after is not None:
        time.sleep(fake.args.exit_after)
        exit_now(fake, fake.args.exit_code, f"--exit-after {fake.args.exit_after}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fake upstream for llama-swap-trio tests")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-id", default="fake")
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--healthy-after", type=float, default=0.0)
    p.add_argument("--never-healthy", action="store_true")
    p.add_argument("--flap-health", type=float, default=0.0)
    p.add_argument("--exit-at-startup", type=int, default=None, metavar="CODE")
    p.add_argument("--exit-after", type=float, default=None)
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--sigterm-delay", type=float, default=0.0)
    p.add_argument("--fork-grandchild", action="store_true")
    p.add_argument("--pid-file", default=None)
    p.add_argument("--events", default=None)
    p.add_argument("--chatty-lines", type=int, default=0)
    p.add_argument("--chatty-forever", action="store_true")
    p.add_argument("--chatty-rate", type=float, default=2000.0)
    p.add_argument("--tokens", type=int, default=5)
    p.add_argument("--token-interval", type=float, default=0.0)
    p.add_argument("--crash-mid-stream", type=int, default=None, metavar="K")
    p.add_argument("--no-response-head", action="store_true")
    p.add_argument("--echo-env", action="append", default=[])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    fake = Fake(parse_args(argv))
    args = fake.args
    log(f"fake upstream {fake.model_id} pid {fake.pid}")
    fake.event("start")
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{fake.pid}\n")
    if args.exit_at_startup is not None:
        log(f"loading model {fake.model_id}")
        log("fatal: cannot load model: file not found")
        sys.stderr.write("error: failed to load model\nfatal: cannot load model, giving up\n")
        sys.stderr.flush()
        fake.event("exit")
        return int(args.exit_at_startup)
    if args.fork_grandchild:
        # Before the SIGTERM handler: the grandchild gets default dispositions. Same process group,
        # inherits stdout/stderr, so it holds the pipes open after we die.
        child = subprocess.Popen(["sleep", "1000"], close_fds=False)
        log(f"grandchild pid {child.pid}")
    install_sigterm(fake)
    for i in range(args.chatty_lines):
        log(f"startup line {i}: loading tensors for {fake.model_id}")
    if args.startup_delay > 0:
        time.sleep(args.startup_delay)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", args.port))
    except OSError as exc:
        log(f"fatal: cannot listen on 127.0.0.1:{args.port}: {exc}")
        return 1
    listener.listen(128)
    log(f"listening on 127.0.0.1:{listener.getsockname()[1]}")
    fake.event("listening")
    threading.Thread(target=watch_readiness, args=(fake,), daemon=True).start()
    if args.chatty_forever:
        threading.Thread(target=chatty_forever, args=(args.chatty_rate,), daemon=True).start()
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _open_socks.add(sock)
        threading.Thread(target=Conn(fake, sock).serve, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
