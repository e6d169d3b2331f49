"""What the ``watch`` screen shows, folded from feed messages (SPEC 5). Pure: no I/O, no trio.

``WatchState.apply(message)`` takes one decoded feed message and updates the model table, the
queue, the recent swaps and requests, and the notices. The connection loop (client.py) sets
``connection``; the renderer (render.py) only reads. Keeping this pure means every message type is
tested with recorded JSON sequences and a fake clock, no sockets.

Robustness rule: the feed is another program's output. A message with a missing or mistyped field
must never crash the view; a field we cannot read shows as unknown ("-"), an unknown ``type`` is
ignored (a newer daemon may send more).

Time: the local clock (``clock``, monotonic by default) stamps what we see, rather than the
daemon's ``at`` fields, so a daemon on another machine with a skewed clock still gives sensible
"TTL left" and "ago" values.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

#: How many recent swaps and requests the view keeps.
HISTORY = 10
#: How many feed log lines (``?logs=1``) the view keeps.
LOG_LINES = 5
#: open requests tracked at most (a daemon under a flood has thousands; the view shows a few)
MAX_OPEN = 1000


class Link(enum.Enum):
    """Where the connection to the daemon stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"  # connect failed (refused, timed out); retrying
    DISCONNECTED = "disconnected"  # was connected, the daemon went away; reconnecting
    HTTP_ERROR = "http_error"  # the handshake got an HTTP answer that is not a websocket; retrying
    REJECTED = "rejected"  # 401/403: the key is missing or wrong; the client gives up


@attrs.frozen
class Connection:
    """The connection notice shown at the top of the view."""

    link: Link
    url: str
    #: seconds until the next attempt, when one is scheduled
    retry_in: float | None = None
    #: HTTP status of a rejected handshake
    status: int | None = None
    #: whether an API key was given (to tell "missing" from "wrong")
    has_key: bool = False
    #: extra words from the daemon (close reason) or the error
    detail: str = ""

    @property
    def text(self) -> str:
        retry = f", retrying in {self.retry_in:g}s" if self.retry_in is not None else ""
        detail = f" ({self.detail})" if self.detail else ""
        if self.link is Link.CONNECTING:
            return f"connecting to {self.url}"
        if self.link is Link.CONNECTED:
            return f"connected to {self.url}"
        if self.link is Link.UNREACHABLE:
            return f"cannot connect to {self.url}{retry}{detail}"
        if self.link is Link.DISCONNECTED:
            return f"disconnected, reconnecting{retry}{detail}"
        if self.link is Link.HTTP_ERROR:
            return f"the daemon answered HTTP {self.status} on {self.url}{retry}"
        # REJECTED
        if self.has_key:
            return f"the daemon refused the API key (HTTP {self.status})"
        return (
            "the daemon needs an API key, pass --api-key or set $LLAMA_SWAP_TRIO_API_KEY "
            f"(HTTP {self.status})"
        )


@attrs.define
class ModelRow:
    id: str
    state: str = "unknown"
    name: str | None = None
    #: seconds of idleness before the daemon unloads the model; 0 = never; None = unknown
    ttl: float | None = None
    #: requests in flight as far as the feed tells (see ``WatchState.apply``)
    in_flight: int = 0
    #: local time at which the model was last seen becoming idle (ready, nothing in flight);
    #: None when unknown (e.g. it was already idle when we connected)
    idle_since: float | None = None
    #: the error of the last failed state change, if any
    error: str | None = None


@attrs.define
class QueueEntry:
    model: str
    position: int | None


@attrs.define
class SwapRow:
    model: str
    evict: list[str]
    #: local time the swap was seen starting (or finishing, when its start was not seen)
    started: float
    done: bool = False
    ok: bool | None = None
    duration_ms: float | None = None
    error: str | None = None


@attrs.define
class RequestRow:
    model: str
    path: str
    status: int | None
    duration_ms: float | None
    ttfb_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_second: float | None
    #: local time the request was seen ending
    seen: float
    id: str | None = None
    queue_ms: float | None = None
    load_ms: float | None = None
    #: the SPEC 3.3 code when the proxy answered with an error
    error: str | None = None
    #: the client left before the response was complete
    client_left: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status is not None and self.status >= 400)


@attrs.define
class OpenRequest:
    """A request that started and has not ended (``request_start`` / ``snapshot.requests``)."""

    id: str
    model: str
    path: str
    #: local time it started (for a snapshot's requests: estimated from the daemon's ``at``)
    started: float
    chunks: int = 0
    bytes: int = 0
    #: chunks per second between the last two ``request_progress`` events (None until then)
    rate: float | None = None
    #: local time and chunk count of the last ``request_progress``
    progress_at: float | None = None
    progress_chunks: int = 0


@attrs.define
class LogRow:
    source: str
    model: str | None
    line: str


def _str(message: Mapping[str, Any], key: str) -> str | None:
    value = message.get(key)
    return value if isinstance(value, str) else None


def _num(message: Mapping[str, Any], key: str) -> float | None:
    value = message.get(key)
    # bool is an int subclass; a boolean is never a number here
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _int(message: Mapping[str, Any], key: str) -> int | None:
    value = message.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _queue(value: object) -> list[QueueEntry]:
    entries: list[QueueEntry] = []
    if not isinstance(value, list):
        return entries
    for item in value:
        if isinstance(item, Mapping) and (model := _str(item, "model")) is not None:
            entries.append(QueueEntry(model=model, position=_int(item, "position")))
    return entries


#: states in which a model holds no requests (the counts reset)
_DOWN_STATES = frozenset({"stopped", "shutdown"})


@attrs.define
class WatchState:
    """Everything the watch view shows. Mutated only by ``apply`` and the connection loop."""

    clock: Callable[[], float] = time.monotonic
    connection: Connection = attrs.field(factory=lambda: Connection(Link.CONNECTING, ""))
    version: str | None = None
    models: dict[str, ModelRow] = attrs.field(factory=dict)
    queue: list[QueueEntry] = attrs.field(factory=list)
    swaps: deque[SwapRow] = attrs.field(factory=lambda: deque(maxlen=HISTORY))
    requests: deque[RequestRow] = attrs.field(factory=lambda: deque(maxlen=HISTORY))
    #: requests started and not ended, oldest first, by id (bounded: the daemon's own count)
    open: dict[str, OpenRequest] = attrs.field(factory=dict)
    #: the wall clock, only to place a snapshot's open requests (their ``at``) on ``clock``
    wall: Callable[[], float] = time.time
    #: the daemon reports request starts (``snapshot.requests``): in-flight counts are exact
    tracks_requests: bool = False
    logs: deque[LogRow] = attrs.field(factory=lambda: deque(maxlen=LOG_LINES))
    #: messages lost since the last snapshot because this client was too slow
    dropped: int = 0
    #: whether a snapshot has arrived on the current connection
    synced: bool = False
    #: ``resources.gpu_memory`` of the snapshot (SPEC 6.7); None = no budget
    gpu_memory: int | None = None
    #: model -> (bytes while running, bytes while asleep), from the snapshot's ``resources``
    sizes: dict[str, tuple[int, int]] = attrs.field(factory=dict)

    def apply(self, message: object) -> None:
        """Fold one decoded feed message into the state. Unknown or malformed ones are ignored."""
        if not isinstance(message, Mapping):
            return
        kind = message.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(self, message)

    def set_connection(self, connection: Connection) -> None:
        """Record a new connection state. Losing the connection means the next snapshot resyncs."""
        if connection.link is not Link.CONNECTED:
            self.synced = False
        self.connection = connection

    # -- message handlers -----------------------------------------------------------------------

    def _snapshot(self, message: Mapping[str, Any]) -> None:
        # A fresh snapshot replaces the models and the queue. The recent swaps and requests are
        # history, still true after a daemon restart, so they stay.
        self.version = _str(message, "version")
        models: dict[str, ModelRow] = {}
        raw = message.get("models")
        for item in raw if isinstance(raw, list) else []:
            if not isinstance(item, Mapping) or (model_id := _str(item, "id")) is None:
                continue
            row = ModelRow(
                id=model_id,
                state=_str(item, "state") or "unknown",
                name=_str(item, "name"),
                ttl=_num(item, "ttl"),
                in_flight=max(0, _int(item, "in_flight") or 0),
            )
            previous = self.models.get(model_id)
            if (
                previous is not None
                and previous.idle_since is not None
                and previous.state == row.state == "ready"
                and row.in_flight == 0
            ):
                # a resync on the same daemon: what we knew about idleness still holds
                row.idle_since = previous.idle_since
            models[model_id] = row
        self.models = models
        self.queue = _queue(message.get("queue"))
        self.dropped = 0
        self.synced = True
        raw_requests = message.get("requests")
        self.tracks_requests = isinstance(raw_requests, list)
        if isinstance(raw_requests, list):
            self._open_from_snapshot(raw_requests)
        self._resources(message.get("resources"))

    def _open_from_snapshot(self, raw: list[object]) -> None:
        now, wall = self.clock(), self.wall()
        known = self.open
        self.open = {}
        for item in raw[:MAX_OPEN]:
            if not isinstance(item, Mapping):
                continue
            rid, model_id = _str(item, "id"), _str(item, "model")
            if rid is None or model_id is None:
                continue
            if rid in known:
                self.open[rid] = known[rid]
                continue
            at = _num(item, "at")
            since = now - max(0.0, wall - at) if at is not None else now
            self.open[rid] = OpenRequest(rid, model_id, _str(item, "path") or "?", since)
        # the router counts granted requests; the view counts started ones (waiting for a load
        # included), which is what the open request rows show
        per_model: dict[str, int] = {}
        for request in self.open.values():
            per_model[request.model] = per_model.get(request.model, 0) + 1
        for row in self.models.values():
            row.in_flight = max(row.in_flight, per_model.get(row.id, 0))

    def _resources(self, resources: object) -> None:
        self.gpu_memory, self.sizes = None, {}
        if not isinstance(resources, Mapping):
            return
        self.gpu_memory = _int(resources, "gpu_memory")
        raw = resources.get("sizes")
        for model_id, pair in raw.items() if isinstance(raw, Mapping) else ():
            if (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            ):
                self.sizes[str(model_id)] = (pair[0], pair[1])

    def memory_used(self) -> int:
        """Bytes held by the models as their states stand now (the daemon's own accounting)."""
        used = 0
        for row in self.models.values():
            running, asleep = self.sizes.get(row.id, (0, 0))
            if row.state in ("starting", "ready", "stopping"):
                used += running
            elif row.state == "sleeping":
                used += asleep
        return used

    def _model_state(self, message: Mapping[str, Any]) -> None:
        model_id = _str(message, "model")
        state = _str(message, "state")
        if model_id is None or state is None:
            return
        row = self.models.setdefault(model_id, ModelRow(id=model_id))
        row.state = state
        row.error = _str(message, "error")
        if state in _DOWN_STATES:
            row.in_flight = 0
        self._take_in_flight(row, message)
        if state == "ready":
            # freshly ready: the TTL starts now (requests that waited for this load will end
            # and restart it through their ``request`` events)
            row.idle_since = self.clock() if row.in_flight == 0 else None
        else:
            row.idle_since = None

    def _swap(self, message: Mapping[str, Any]) -> None:
        model_id = _str(message, "model")
        phase = _str(message, "phase")
        if model_id is None or phase not in ("start", "done"):
            return
        raw_evict = message.get("evict")
        evict = [m for m in raw_evict if isinstance(m, str)] if isinstance(raw_evict, list) else []
        if phase == "start":
            self.swaps.append(SwapRow(model=model_id, evict=evict, started=self.clock()))
            return
        row = next((s for s in reversed(self.swaps) if s.model == model_id and not s.done), None)
        if row is None:
            # its start happened before we connected (or was lost): show the end alone
            row = SwapRow(model=model_id, evict=evict, started=self.clock())
            self.swaps.append(row)
        row.done = True
        ok = message.get("ok")
        row.ok = ok if isinstance(ok, bool) else None
        row.duration_ms = _num(message, "duration_ms")
        row.error = _str(message, "error")
        if evict:
            row.evict = evict

    def _queue_changed(self, message: Mapping[str, Any]) -> None:
        self.queue = _queue(message.get("queue"))

    def _request_start(self, message: Mapping[str, Any]) -> None:
        rid, model_id = _str(message, "id"), _str(message, "model")
        if rid is None or model_id is None or len(self.open) >= MAX_OPEN:
            return
        self.open[rid] = OpenRequest(rid, model_id, _str(message, "path") or "?", self.clock())
        row = self.models.get(model_id)
        if row is not None and self.tracks_requests:
            row.in_flight += 1
            row.idle_since = None

    def _request_progress(self, message: Mapping[str, Any]) -> None:
        rid = _str(message, "id")
        request = self.open.get(rid) if rid is not None else None
        if request is None:
            return
        now = self.clock()
        chunks = max(0, _int(message, "chunks") or 0)
        if request.progress_at is not None and now > request.progress_at:
            request.rate = (chunks - request.progress_chunks) / (now - request.progress_at)
        request.progress_at, request.progress_chunks = now, chunks
        request.chunks = chunks
        request.bytes = max(0, _int(message, "bytes") or 0)

    def _request(self, message: Mapping[str, Any]) -> None:
        model_id = _str(message, "model")
        if model_id is None:
            return
        now = self.clock()
        rid = _str(message, "id")
        started = self.open.pop(rid, None) if rid is not None else None
        self.requests.append(
            RequestRow(
                model=model_id,
                path=_str(message, "path") or "?",
                status=_int(message, "status"),
                duration_ms=_num(message, "duration_ms"),
                ttfb_ms=_num(message, "ttfb_ms"),
                prompt_tokens=_int(message, "prompt_tokens"),
                completion_tokens=_int(message, "completion_tokens"),
                tokens_per_second=_num(message, "tokens_per_second"),
                seen=now,
                id=rid,
                queue_ms=_num(message, "queue_ms"),
                load_ms=_num(message, "load_ms"),
                error=_str(message, "error"),
                client_left=message.get("client_disconnected") is True,
            )
        )
        row = self.models.get(model_id)
        if row is None:
            return
        # In-flight: with request starts on the feed the count follows them (every start ends
        # in one ``request``); from an older daemon it comes from the snapshot and goes down as
        # requests end. A daemon that adds ``in_flight`` gives the exact count. TTL counts from
        # the end of the last request.
        if not self.tracks_requests or started is not None:
            row.in_flight = max(0, row.in_flight - 1)
        self._take_in_flight(row, message)
        if row.state == "ready" and row.in_flight == 0:
            row.idle_since = now

    def _log(self, message: Mapping[str, Any]) -> None:
        line = _str(message, "line")
        if line is None:
            return
        self.logs.append(
            LogRow(source=_str(message, "source") or "?", model=_str(message, "model"), line=line)
        )

    def _lagged(self, message: Mapping[str, Any]) -> None:
        self.dropped += max(0, _int(message, "dropped") or 0)

    @staticmethod
    def _take_in_flight(row: ModelRow, message: Mapping[str, Any]) -> None:
        exact = _int(message, "in_flight")
        if exact is not None and exact >= 0:
            row.in_flight = exact

    # -- derived values the view shows ----------------------------------------------------------

    def ttl_left(self, row: ModelRow, now: float | None = None) -> float | str | None:
        """Seconds until a TTL unload, or why there is none.

        Returns seconds (float), ``"never"`` (no TTL), ``"paused"`` (requests in flight: the TTL
        counts from the end of the last request), or None when unknown or not applicable.
        """
        if row.state != "ready" or row.ttl is None:
            return None
        if row.ttl <= 0:
            return "never"
        if row.in_flight > 0:
            return "paused"
        if row.idle_since is None:
            return None
        now = self.clock() if now is None else now
        return max(0.0, row.ttl - (now - row.idle_since))


_HANDLERS: dict[str, Callable[[WatchState, Mapping[str, Any]], None]] = {
    "snapshot": WatchState._snapshot,
    "model_state": WatchState._model_state,
    "swap": WatchState._swap,
    "queue": WatchState._queue_changed,
    "request_start": WatchState._request_start,
    "request_progress": WatchState._request_progress,
    "request": WatchState._request,
    "log": WatchState._log,
    "lagged": WatchState._lagged,
}
