"""JSON decoding for the request path: msgspec where it gives ``json.loads``'s answer, else
``json.loads`` itself.

The daemon reads every request body for its ``model`` and every JSON response for its usage;
with the standard library that was the largest single cost of a small proxied request
(benchmarks/RESULTS.md, "CPU per request"). msgspec decodes the same values about five times as
fast, but it refuses some inputs ``json.loads`` accepts: ``NaN`` and ``Infinity``, numbers out
of the float range, lone surrogate escapes (``"\\ud800"``), a UTF-8 BOM, UTF-16 and UTF-32. Every
input msgspec refuses goes to ``json.loads``, so the value, or the error message a client sees,
is always the standard library's (tests/http/test_json_fast.py checks both on such inputs).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode


def loads(data: bytes) -> Any:
    """``json.loads(data)``: the same value, or the same exception (ValueError, RecursionError)."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(data)
