"""Log lines for the feed (SPEC 5 ``log`` messages): the proxy's own log and upstream output.

Two rules hold for everything that goes out here:

- **No API key ever reaches the feed.** The proxy never logs a key on purpose (http/auth.py), but
  a request line, a traceback or an upstream that echoes its request headers could carry one, so
  every line is passed through a :class:`Redactor` of the configured keys first.
- **Publishing never logs.** :class:`FeedLogHandler` is a logging handler that publishes; a log
  call made while it publishes would re-enter it. The bus does not log, and the handler also
  refuses to re-enter itself, so a mistake elsewhere cannot turn into unbounded recursion.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import trio

from llama_swap_trio.feed.bus import EventBus

REDACTED = "[redacted]"


class Redactor:
    """Replaces every configured API key in a line with ``[redacted]``.

    Longer keys go first, so a key that contains another is hidden whole. With no keys configured
    it returns the line unchanged at the cost of one call.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(sorted({key for key in keys if key}, key=len, reverse=True))

    def __call__(self, line: str) -> str:
        for key in self._keys:
            if key in line:
                line = line.replace(key, REDACTED)
        return line


def upstream_log_event(model: str, line: str, redact: Redactor) -> dict[str, Any]:
    """The feed message for one line an upstream printed."""
    return {"type": "log", "source": "upstream", "model": model, "line": redact(line)}


class FeedLogHandler(logging.Handler):
    """Publishes proxy log records to the bus as ``{"type": "log", "source": "proxy"}``.

    Create it inside ``trio.run`` (it remembers the run's token). A record logged from another
    thread (trio's worker threads, hypercorn internals) is handed to the trio thread with
    ``run_sync_soon``, because the bus is not thread-safe. A formatted record that spans several
    lines (a traceback) becomes one message per line.
    """

    def __init__(self, bus: EventBus, redact: Redactor) -> None:
        super().__init__()
        self._bus = bus
        self._redact = redact
        self._token = trio.lowlevel.current_trio_token()
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):
            return  # a log call from inside our own publishing: drop it rather than recurse
        self._local.busy = True
        try:
            text = self.format(record)
            events = [
                {"type": "log", "source": "proxy", "line": self._redact(line)}
                for line in text.splitlines()
            ]
            if self._in_trio_thread():
                self._publish(events)
            else:
                try:
                    self._token.run_sync_soon(self._publish, events)
                except trio.RunFinishedError:
                    pass  # the daemon has ended: nobody is listening
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False

    def _in_trio_thread(self) -> bool:
        try:
            return trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:
            return False

    def _publish(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._bus.publish(event)
