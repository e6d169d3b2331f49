"""Fan-out of daemon events to feed subscribers, never blocking the publisher.

Each subscriber has a bounded buffer. ``publish`` is synchronous and O(subscribers): it never
awaits, never raises on a subscriber's account and never logs for one (a logging handler
publishes proxy log lines here, so a log call inside ``publish`` would recurse). So the router
and the request path never wait for a slow websocket client (ARCHITECTURE rule 7).

A subscriber whose buffer is full loses the message. The loss is recorded *where it happened*:
the subscriber reads the messages it had buffered, then ``{"type": "lagged", "dropped": N}``, then
what arrived after the gap. That way a client knows which of its messages are still in order.

``log`` events (SPEC 5: only with ``?logs=1``) reach only subscribers that asked for them, so a
chatty upstream never fills (and lags) the buffers of clients that do not show logs.

*Listeners* (:meth:`EventBus.add_listener`) are the in-process consumers (metrics, the activity
ring, observe/): synchronous callbacks that see every event except ``log`` ones, in order and
never dropped, so a counter is exact however slow the feed clients are. A listener must be quick
and must not block; one that raises is logged and kept (the event still reaches everyone else).

``close`` (the daemon begins to shut down) ends every subscription after its buffered events; a
subscription opened on a closed bus ends at once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import trio

Event = Mapping[str, Any]
Listener = Callable[[Event], None]

log = logging.getLogger(__name__)

#: events buffered per subscriber before it starts losing them
DEFAULT_BUFFER = 256


class _Gap:
    """A run of events lost at this point of a subscriber's stream."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 1


class Subscription:
    """One subscriber's bounded queue. Iterate it to receive events (``lagged`` included)."""

    def __init__(self, bus: EventBus, maxlen: int, logs: bool) -> None:
        self._bus = bus
        self._maxlen = maxlen
        #: whether this subscriber receives ``log`` events
        self.logs = logs
        self._pending: deque[Event | _Gap] = deque()
        #: events (not gaps) in ``_pending``: the bounded quantity
        self._buffered = 0
        self._wakeup = trio.Event()
        self._closed = trio.Event()

    def _offer(self, event: Event) -> None:
        if self._buffered >= self._maxlen:
            last = self._pending[-1] if self._pending else None
            if isinstance(last, _Gap):
                last.dropped += 1
            else:
                self._pending.append(_Gap())
        else:
            self._pending.append(event)
            self._buffered += 1
        self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return once the subscription is closed (by the bus shutting down, or by its owner)."""
        await self._closed.wait()

    def get_nowait(self) -> Event | None:
        """The next event (a ``lagged`` notice where messages were lost), or None."""
        if not self._pending:
            return None
        item = self._pending.popleft()
        if isinstance(item, _Gap):
            return {"type": "lagged", "dropped": item.dropped}
        self._buffered -= 1
        return item

    async def get(self) -> Event:
        """The next event; waits for one.

        Raises:
            trio.EndOfChannel: the subscription is closed and every buffered event was read.
        """
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            if self.closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    def close(self) -> None:
        """Stop receiving; a reader gets what is buffered, then the end. Idempotent."""
        self._closed.set()
        self._wakeup.set()
        self._bus._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                event = await self.get()
            except trio.EndOfChannel:
                return
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._listeners: tuple[Listener, ...] = ()
        self._closed = False

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every later event but ``log`` ones (see the module doc)."""
        self._listeners = (*self._listeners, listener)

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every subscriber and listener. Never blocks, never raises."""
        is_log = event.get("type") == "log"
        if not is_log:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    # Not a log event, so this line reaches subscribers only: no recursion.
                    log.exception("event listener %r failed on %s", listener, event.get("type"))
        for subscriber in tuple(self._subscribers):
            if is_log and not subscriber.logs:
                continue
            subscriber._offer(event)

    def subscribe(self, maxlen: int = DEFAULT_BUFFER, *, logs: bool = False) -> Subscription:
        """A new subscription (use it as a context manager so it is removed when done).

        Args:
            maxlen: events buffered before this subscriber starts losing them.
            logs: also receive ``log`` events.
        """
        subscription = Subscription(self, maxlen, logs)
        if self._closed:
            subscription.close()
        else:
            self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """End every subscription (shutdown): iterators finish after their buffered events.

        Later subscriptions end at once. Idempotent."""
        self._closed = True
        for subscriber in tuple(self._subscribers):
            subscriber.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
