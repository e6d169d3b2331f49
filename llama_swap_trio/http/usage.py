"""Token accounting from relayed responses, without buffering or delaying them.

The forwarder passes every chunk it relays to :meth:`UsageSniffer.feed` *after* sending it on, so
the sniffer never stands between the upstream and the client. It understands:

- JSON bodies: kept in a bounded buffer (1 MiB; past it, accounting is given up for that
  response) and parsed once at the end.
- SSE bodies (``text/event-stream``): complete ``data:`` lines are parsed as they arrive; only
  lines that mention ``"usage"`` or ``"timings"`` are decoded, so a long token stream costs a
  substring search per line, not a JSON parse.

Figures (llama-swap-features 5.2):

- ``usage`` at the top level, in ``response.usage`` (Responses API) or ``message.usage``
  (Anthropic ``message_start``); prompt tokens from ``prompt_tokens`` else ``input_tokens``,
  completion tokens from ``completion_tokens`` else ``output_tokens``. Later non-zero values
  overwrite earlier ones (Anthropic sends input tokens first and output tokens at the end).
- llama-server ``timings``: ``prompt_n``, ``predicted_n`` and ``predicted_per_second`` override the
  usage figures; the last ``timings`` seen wins. An ``/infill`` JSON array takes the last element.

Compressed bodies (``content-encoding`` set) are not decoded: accounting is skipped for them.
"""

from __future__ import annotations

from typing import Any

import attrs

from llama_swap_trio.http import json_fast

#: JSON bodies larger than this are not parsed for usage
MAX_JSON_BYTES = 1 << 20
#: an SSE line longer than this is skipped (a Responses API ``response.completed`` event carries
#: the whole answer next to its usage, so lines holding usage can be long)
MAX_SSE_LINE = 1 << 20
#: chunks up to this size count their event ends with one ``bytes.count``
_SMALL_CHUNK = 2048
#: a key split between two chunks: this many bytes on each side of the seam are checked
_SEAM = len(b'"timings"') - 1


@attrs.frozen
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: generation speed reported by the upstream (llama-server ``timings``), if any
    tokens_per_second: float | None = None


def _int(value: object) -> int | None:
    # bool is an int subclass; a JSON true is not a token count.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    return None


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


class UsageSniffer:
    """Collects token figures from a response body fed to it chunk by chunk.

    Args:
        content_type: the response's ``content-type`` header ("" when absent).
        content_encoding: the response's ``content-encoding`` header ("" when absent).
    """

    def __init__(self, content_type: str = "", content_encoding: str = "") -> None:
        media = content_type.split(";", 1)[0].strip().lower()
        encoded = content_encoding.strip().lower() not in ("", "identity")
        self._sse = media == "text/event-stream"
        self._json = media in ("application/json", "") or media.endswith("+json")
        self._enabled = not encoded and (self._sse or self._json)
        #: a JSON body read so far
        self._buffer = bytearray()
        #: an unfinished SSE line carried over from earlier chunks, as (chunk, start, end)
        #: references: joined only if it may hold usage (a bulk stream's long lines are never
        #: copied, and each part is scanned once)
        self._carry: list[tuple[bytes, int, int]] = []
        self._carry_len = 0
        self._carry_key = False
        #: the carried line's last few bytes (a key may straddle chunks)
        self._carry_tail = b""
        #: skipping the rest of an over-long SSE line
        self._skipping = False
        self._prompt: int | None = None
        self._completion: int | None = None
        self._tps: float | None = None
        self._timings: dict[str, Any] | None = None
        #: body bytes relayed so far, and (SSE) events: blank lines that end one (feed progress)
        self.bytes = 0
        self.events = 0
        self._ended_with_newline = False

    @property
    def sse(self) -> bool:
        """The response is an event stream."""
        return self._sse

    def feed(self, chunk: bytes) -> None:
        """Account for one relayed chunk. Never raises on malformed data."""
        self.bytes += len(chunk)
        if self._sse and chunk:
            self.events += self._count_events(chunk)
            self._ended_with_newline = chunk[-1] == 10  # b"\n"
        if not self._enabled or not chunk:
            return
        if self._sse:
            self._feed_sse(chunk)
        elif len(self._buffer) + len(chunk) > MAX_JSON_BYTES:
            self._enabled = False
            self._buffer.clear()
        else:
            self._buffer += chunk

    def result(self) -> Usage:
        """The figures seen so far (call once the body ended; parses a buffered JSON body)."""
        if self._enabled and self._json and not self._sse and self._buffer:
            self._json_body(bytes(self._buffer))
            self._buffer.clear()
        if self._sse and self._carry:
            self._finish_carried()  # a final line without its newline
        self._apply_timings()
        return Usage(self._prompt, self._completion, self._tps)

    # -- SSE -------------------------------------------------------------------------------------

    def _count_events(self, chunk: bytes) -> int:
        """Blank lines (event ends) in ``chunk``, one that straddles the previous chunk included.

        ``bytes.count(b"\n\n")`` costs about 4 ns a byte on long lines (a two-byte pattern; a
        bulk stream's 64 KiB reads ran at half speed), while finding one byte runs at memory
        speed: a big chunk is walked newline by newline instead, a token-sized one counted."""
        events = 1 if self._ended_with_newline and chunk[0] == 10 else 0
        if len(chunk) <= _SMALL_CHUNK:
            return events + chunk.count(b"\n\n")
        find = chunk.find
        at = find(b"\n")
        while at >= 0:
            if chunk[at + 1 : at + 2] == b"\n":
                events += 1
                at = find(b"\n", at + 2)
            else:
                at = find(b"\n", at + 1)
        return events

    def _feed_sse(self, chunk: bytes) -> None:
        start = 0
        if self._carry or self._skipping:
            # First finish the line the previous chunks left unfinished.
            end = chunk.find(b"\n")
            if end < 0:
                self._keep(chunk, 0, len(chunk))
                return
            if self._skipping:
                self._skipping = False
            else:
                self._keep(chunk, 0, end)
                self._finish_carried()
            start = end + 1
        if not _has_key(chunk, start, len(chunk)):
            # Fast path (nearly every token chunk, and bulk streams): no complete line in the
            # rest can hold usage, so only carry its unfinished last line, if any, to the next.
            self._keep(chunk, max(start, chunk.rfind(b"\n") + 1), len(chunk), scanned=True)
            return
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk, start, len(chunk))
                return
            self._sse_line(chunk[start:end])
            start = end + 1

    def _keep(self, chunk: bytes, start: int, end: int, *, scanned: bool = False) -> None:
        """Carry ``chunk[start:end]`` (part of an unfinished line) to the next chunk; skip the
        line once it is over ``MAX_SSE_LINE``. ``scanned``: that part is known to hold no key
        (only the seam with the part before it is checked)."""
        if start >= end or self._skipping:
            return
        if self._carry_len + end - start > MAX_SSE_LINE:
            self._skipping = True
            self._drop_carried()
            return
        if not self._carry_key:
            seam = self._carry_tail + chunk[start : start + _SEAM]
            self._carry_key = (not scanned and _has_key(chunk, start, end)) or _has_key(
                seam, 0, len(seam)
            )
            self._carry_tail = (self._carry_tail + chunk[max(start, end - _SEAM) : end])[-_SEAM:]
        self._carry.append((chunk, start, end))
        self._carry_len += end - start

    def _finish_carried(self) -> None:
        """The carried line is complete: read it if it may hold usage."""
        if self._carry_key:
            self._sse_line(b"".join(chunk[start:end] for chunk, start, end in self._carry))
        self._drop_carried()

    def _drop_carried(self) -> None:
        self._carry.clear()
        self._carry_len = 0
        self._carry_key = False
        self._carry_tail = b""

    def _sse_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        # The cheap test first: most lines are token deltas with neither key.
        if b'"usage"' not in line and b'"timings"' not in line:
            return
        data = line[5:].strip()
        try:
            value = json_fast.loads(data)
        except (ValueError, RecursionError):  # malformed, or nested past the parser's depth
            return
        if isinstance(value, dict):
            self._object(value)

    # -- JSON ------------------------------------------------------------------------------------

    def _json_body(self, body: bytes) -> None:
        # The cheap test first: a body that mentions neither key has nothing to parse for.
        if b'"usage"' not in body and b'"timings"' not in body:
            return
        try:
            value = json_fast.loads(body)
        except (ValueError, RecursionError):  # malformed, or nested past the parser's depth
            return
        if isinstance(value, list) and value and isinstance(value[-1], dict):
            value = value[-1]  # /infill answers an array; the last element has the timings
        if isinstance(value, dict):
            self._object(value)

    # -- shared ----------------------------------------------------------------------------------

    def _object(self, value: dict[str, Any]) -> None:
        for usage in (
            value.get("usage"),
            _nested(value, "response", "usage"),
            _nested(value, "message", "usage"),
        ):
            if isinstance(usage, dict):
                self._usage(usage)
        timings = value.get("timings")
        if isinstance(timings, dict):
            self._timings = timings

    def _usage(self, usage: dict[str, Any]) -> None:
        prompt = _int(usage.get("prompt_tokens"))
        if prompt is None:
            prompt = _int(usage.get("input_tokens"))
        completion = _int(usage.get("completion_tokens"))
        if completion is None:
            completion = _int(usage.get("output_tokens"))
        # later non-zero values win; a zero never hides an earlier figure
        if prompt is not None and (prompt or self._prompt is None):
            self._prompt = prompt
        if completion is not None and (completion or self._completion is None):
            self._completion = completion

    def _apply_timings(self) -> None:
        timings = self._timings
        if timings is None:
            return
        prompt = _int(timings.get("prompt_n"))
        completion = _int(timings.get("predicted_n"))
        tps = _float(timings.get("predicted_per_second"))
        if prompt is not None:
            self._prompt = prompt
        if completion is not None:
            self._completion = completion
        if tps is not None:
            self._tps = tps


def _has_key(data: bytes, start: int, end: int) -> bool:
    """``"usage"`` or ``"timings"`` in ``data[start:end]``. Both start with a quote, and finding
    one byte is several times faster than finding a word: a long line without quotes (base64,
    plain text) costs one quick scan."""
    quote = data.find(b'"', start, end)
    if quote < 0:
        return False
    return data.find(b'"usage"', quote, end) >= 0 or data.find(b'"timings"', quote, end) >= 0


def _nested(value: dict[str, Any], outer: str, inner: str) -> object:
    holder = value.get(outer)
    return holder.get(inner) if isinstance(holder, dict) else None
