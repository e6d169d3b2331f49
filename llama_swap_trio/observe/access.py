"""The access log (SPEC 6.2): one line per HTTP request at ``info``, proxy-made errors included.

The app opens an :class:`Exchange` for every HTTP request (model-routed or not: a 401 or a 404
leaves a line too), its ``send`` records the status, and :func:`log_exchange` writes the line when
the request is over::

    POST /v1/chat/completions model=qwen status=200 duration_ms=1380.4 ttfb_ms=1371.2
    queue_ms=1368.0 prompt_tokens=12 completion_tokens=40 id=3fa9c1-7

(one line; wrapped here). A model-routed request's figures are those of its feed ``request``
event (:mod:`.requests`), so the log, the feed, the metrics and the activity history agree.

Keys never appear: a query string's ``api_key`` value is replaced by ``[redacted]`` (however it
is percent-encoded), and the whole line goes through the configured keys' redactor as well.
With the proxy log above ``info`` (the benchmarks run at ``warn``) a request costs one level check.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus

from llama_swap_trio.feed.logs import REDACTED, Redactor
from llama_swap_trio.http.asgi import Scope, Send
from llama_swap_trio.http.hygiene import CLIENT_QUERY
from llama_swap_trio.observe.requests import RequestLife

log = logging.getLogger("llama_swap_trio.access")

#: the status logged for a request whose client left before any answer (nginx's convention)
CLIENT_CLOSED = 499
#: scope key under which the app keeps the request's :class:`Exchange`
EXCHANGE = "llama_swap_trio.exchange"


class Exchange:
    """What the access log needs to know about one HTTP request, filled in as it goes."""

    __slots__ = ("arrived", "life", "model", "status")

    def __init__(self, arrived: float) -> None:
        #: trio time the app first saw the request
        self.arrived = arrived
        #: the response status (the first ``http.response.start``), 0 until one is sent; the
        #: app does not record it for a model-routed request's own answer (its ``event`` has it)
        self.status = 0
        #: the model it was routed to (set by the app once known)
        self.model: str | None = None
        #: a model-routed request's feed record (its ``event`` once it ended)
        self.life: RequestLife | None = None

    @property
    def event(self) -> dict[str, Any] | None:
        """The feed's ``request`` event of a model-routed request that ended."""
        return self.life.event if self.life is not None else None

    def wrap(self, send: Send) -> Send:
        """``send`` that remembers the response status."""

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            await send(message)

        return recording_send


def redacted_query(query: bytes) -> str:
    """``query`` (raw) with every ``api_key`` value replaced by ``[redacted]``."""
    text = query.decode("latin-1")
    if "=" not in text:
        return text
    parts = text.split("&")
    for i, part in enumerate(parts):
        name, sep, _ = part.partition("=")
        if sep and unquote_plus(name) == "api_key":
            parts[i] = f"{name}={REDACTED}"
    return "&".join(parts)


def _figure(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def access_line(scope: Scope, exchange: Exchange, now: float, redact: Redactor) -> str:
    """The access log line of a finished request."""
    query: bytes = scope.get(CLIENT_QUERY) or scope.get("query_string", b"")
    target = str(scope.get("path", ""))
    if query:
        target += "?" + redacted_query(query)
    event = exchange.event
    status = exchange.status or CLIENT_CLOSED
    words = [str(scope.get("method", "-")), target]
    if event is None:
        words.append(f"model={exchange.model or '-'}")
        words.append(f"status={status}")
        words.append(f"duration_ms={(now - exchange.arrived) * 1000:.1f}")
        words.append("ttfb_ms=- queue_ms=-")
    else:
        words.append(f"model={event['model']}")
        words.append(f"status={event['status']}")
        for key in ("duration_ms", "ttfb_ms", "queue_ms", "load_ms"):
            words.append(f"{key}={_figure(event.get(key))}")
        for key in ("prompt_tokens", "completion_tokens", "tokens_per_second", "error"):
            if event.get(key) is not None:
                words.append(f"{key}={_figure(event[key])}")
        words.append(f"id={event['id']}")
    return redact(" ".join(words))


def log_exchange(scope: Scope, exchange: Exchange, now: float, redact: Redactor) -> None:
    """Write the access log line of a finished request (when ``info`` is enabled)."""
    if log.isEnabledFor(logging.INFO):
        log.info("%s", access_line(scope, exchange, now, redact))
