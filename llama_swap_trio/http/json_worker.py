"""The helper process that reads a heavy JSON body for the daemon (see :mod:`.heavy_body`).

Run as ``python -m llama_swap_trio.http.json_worker scan|rewrite``; the body comes on stdin.

- ``scan``: prints one JSON line: ``{"ok": true, "model": M, "stream": S}`` (``model`` null when
  the body has none), or ``{"ok": false, "code": C, "message": T}`` with C ``invalid_json`` or
  ``invalid_request``, the codes the daemon answers with 400.
- ``rewrite``: stdin is a 4-byte big-endian length, that many bytes of instructions (JSON:
  ``use_model_name``, ``requested``, ``filters``), then the body; prints the rewritten body, or
  exits 3 with the error line on stderr.

msgspec reads the top level as ``dict[str, msgspec.Raw]``: every byte is validated, but nothing
below the top level becomes a Python object (a 100 MB ``{"x": [{}, {}, ...]}`` costs no memory
beyond the body), and members are written back as the bytes they were. A body msgspec refuses that
``json.loads`` might accept (lone surrogate escapes, ``NaN``, UTF-16) falls back to
``json.loads``, so the answer is the one the daemon gives a small body; other refusals are
answered at once, without building the objects.
"""

from __future__ import annotations

import json
import re
import sys
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


def top_level(body: bytes) -> tuple[dict[str, Any], bool]:
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


def scan(body: bytes) -> dict[str, object]:
    """What routing needs: ``model`` (a string or None) and ``stream``."""
    try:
        members, raw = top_level(body)
    except Refused as refused:
        return {"ok": False, "code": refused.code, "message": refused.message}
    model = _value(members, "model", raw)
    if model is not None and not isinstance(model, str):
        return {"ok": False, "code": "invalid_request", "message": "'model' must be a string"}
    return {"ok": True, "model": model or None, "stream": _value(members, "stream", raw) is True}


def rewrite(body: bytes, instructions: dict[str, Any]) -> bytes:
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


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    data = sys.stdin.buffer.read()
    if mode == "scan":
        sys.stdout.write(json.dumps(scan(data)) + "\n")
        return 0
    if mode == "rewrite":
        size = int.from_bytes(data[:4], "big")
        instructions = json.loads(data[4 : 4 + size])
        try:
            sys.stdout.buffer.write(rewrite(data[4 + size :], instructions))
        except Refused as refused:
            sys.stderr.write(f"{refused.code}: {refused.message}\n")
            return 3
        return 0
    sys.stderr.write("usage: python -m llama_swap_trio.http.json_worker scan|rewrite\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
