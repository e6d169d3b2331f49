"""The helper process that reads a heavy JSON body for the daemon (see :mod:`.heavy_body`).

Run as ``python -m llama_swap_trio.http.json_worker``: one process serves the daemon's heavy
bodies one after the other until its stdin closes (the daemon stopped or died: the pipe's write
end closes with it, so the helper never outlives the daemon). Each request on stdin is a 13-byte
head (a mode byte ``s`` or ``r``, a 4-byte instructions length, an 8-byte body length, all
big-endian), the instructions, then the body; each answer on stdout is a status byte, an 8-byte
length, then the payload:

- ``s`` (scan): status 0, payload one JSON line: ``{"ok": true, "model": M, "stream": S}``
  (``model`` null when the body has none), or ``{"ok": false, "code": C, "message": T}`` with C
  ``invalid_json`` or ``invalid_request``, the codes the daemon answers with 400.
- ``r`` (rewrite; instructions are JSON: ``use_model_name``, ``requested``, ``filters``): status
  0 and the rewritten body, or status 3 and the error line.
- status 1: the helper failed on this body (the error line); it goes on serving.

msgspec reads the top level as ``dict[str, msgspec.Raw]``: every byte is validated, but nothing
below the top level becomes a Python object (a 100 MB ``{"x": [{}, {}, ...]}`` costs no memory
beyond the body), and members are written back as the bytes they were. A body msgspec refuses that
``json.loads`` might accept (lone surrogate escapes, ``NaN``, UTF-16) falls back to
``json.loads``, so the answer is the one the daemon gives a small body; other refusals are
answered at once, without building the objects.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import traceback
from io import BufferedReader, BufferedWriter
from typing import Any

import msgspec

from llama_swap_trio.config.model import Filters
from llama_swap_trio.http.rewrite import apply_filter_set

_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
#: what json.loads accepts and msgspec does not: a UTF-16/32 or BOM start (json.loads detects
#: the encoding), lone surrogate escapes, NaN and the infinities
_LENIENT = re.compile(rb"^(?:\xef\xbb\xbf|\xff\xfe|\xfe\xff|[^\x00]\x00|\x00)")
_LENIENT_ANYWHERE = re.compile(rb"\\u[dD][89a-fA-F]|NaN|-?Infinity")


class Refused(Exception):
    """The body is not a JSON object the daemon can route (a 400 with ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def top_level(body: bytes | bytearray) -> tuple[dict[str, Any], bool]:
    """The body's top-level members, and whether they are raw (msgspec) or parsed (fallback).

    Raises:
        Refused: not JSON (``invalid_json``), or not an object (``invalid_request``).
    """
    try:
        return _TOP.decode(body), True
    except msgspec.ValidationError:  # JSON, but its top level is not an object
        raise Refused("invalid_request", "the request body must be a JSON object") from None
    except msgspec.DecodeError as error:
        if not _LENIENT.search(body[:4]) and not _LENIENT_ANYWHERE.search(body):
            # nothing json.loads would accept either: do not build the objects to find out
            raise Refused("invalid_json", f"invalid JSON body: {error}") from None
    try:
        value = json.loads(body)
    except ValueError as error:
        raise Refused("invalid_json", f"invalid JSON body: {error}") from None
    except RecursionError:
        raise Refused("invalid_json", "invalid JSON body: nested too deeply") from None
    if not isinstance(value, dict):
        raise Refused("invalid_request", "the request body must be a JSON object")
    return value, False


def _value(members: dict[str, Any], key: str, raw: bool) -> object:
    if key not in members:
        return None
    return json.loads(bytes(members[key])) if raw else members[key]


def scan(body: bytes | bytearray) -> dict[str, object]:
    """What routing needs: ``model`` (a string or None) and ``stream``."""
    try:
        members, raw = top_level(body)
    except Refused as refused:
        return {"ok": False, "code": refused.code, "message": refused.message}
    model = _value(members, "model", raw)
    if model is not None and not isinstance(model, str):
        return {"ok": False, "code": "invalid_request", "message": "'model' must be a string"}
    return {"ok": True, "model": model or None, "stream": _value(members, "stream", raw) is True}


def rewrite(body: bytes | bytearray, instructions: dict[str, Any]) -> bytes:
    """``body`` with ``use_model_name`` and the filters applied (as http/rewrite.py does)."""
    members, raw = top_level(body)
    filters = Filters(
        strip_params=tuple(instructions["filters"]["strip_params"]),
        set_params=instructions["filters"]["set_params"],
        set_params_by_id=instructions["filters"]["set_params_by_id"],
    )
    if raw:
        # a dotted key reaches into a top-level member: that member (only) becomes objects
        keys = [*filters.strip_params, *filters.set_params]
        keys += list(filters.set_params_by_id.get(instructions["requested"], {}))
        for key in keys:
            head = key.split(".", 1)[0]
            if key not in members and isinstance(members.get(head), msgspec.Raw):
                members[head] = msgspec.json.decode(members[head])
    if instructions["use_model_name"]:
        members["model"] = instructions["use_model_name"]
    apply_filter_set(members, filters, instructions["requested"])
    if raw:
        return msgspec.json.encode(members)
    return json.dumps(members, separators=(",", ":"), default=str).encode()


HEAD_SIZE = 13
#: how much lower than the daemon's this process's CPU priority is
NICE = 10


def _read_exact(stream: BufferedReader, size: int) -> bytearray | None:
    """Exactly ``size`` bytes from ``stream`` (read in place), or None at EOF."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = stream.readinto(view[got:])
        if not count:
            return None
        got += count
    return buffer


def answer(mode: bytes, instructions: bytes, body: bytearray) -> tuple[int, bytes]:
    """The status and payload for one request (see the module docstring)."""
    # msgspec and json.loads read the bytearray in place
    if mode == b"s":
        return 0, (json.dumps(scan(body)) + "\n").encode()
    if mode == b"r":
        try:
            return 0, rewrite(body, json.loads(instructions))
        except Refused as refused:
            return 3, f"{refused.code}: {refused.message}".encode()
    return 1, f"unknown mode {mode!r}".encode()


def serve(stdin: BufferedReader, stdout: BufferedWriter) -> int:
    """Answer requests until ``stdin`` ends."""
    while True:
        head = _read_exact(stdin, HEAD_SIZE)
        if head is None:
            return 0
        mode = bytes(head[:1])
        instructions = _read_exact(stdin, int.from_bytes(head[1:5], "big"))
        body = _read_exact(stdin, int.from_bytes(head[5:13], "big"))
        if instructions is None or body is None:
            return 0
        try:
            status, payload = answer(mode, bytes(instructions), body)
        except Exception as error:  # a bug on one body must not end the helper
            traceback.print_exc()
            status, payload = 1, f"{type(error).__name__}: {error}".encode()
        del body, instructions
        stdout.write(bytes([status]) + len(payload).to_bytes(8, "big"))
        stdout.write(payload)
        stdout.flush()


def main() -> int:
    # Ctrl-C in a terminal reaches the whole process group: the daemon stops the helper itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the daemon's event loop must win the CPU when the cores are busy: a heavy body's scan is
    # batch work (a /health answer paused 58-89 ms once, with no long step in the daemon, while
    # this process, the client and others' work shared two cores)
    try:
        os.nice(NICE)
    except OSError:  # not permitted here: run at the daemon's priority
        pass
    try:
        with open(0, "rb", closefd=False) as stdin, open(1, "wb", closefd=False) as stdout:
            return serve(stdin, stdout)
    except BrokenPipeError:  # the daemon went away while we answered
        return 0


if __name__ == "__main__":
    sys.exit(main())
