"""Fan-out of daemon events to feed subscribers, never blocking the publisher.

Each subscriber has a bounded buffer. ``publish`` is synchronous and O(subscribers); a subscriber
whose buffer is full loses the message and the loss is counted, and the next message it receives
is preceded by ``{"type": "lagged", "dropped": N}``. So the router and the request path never wait
for a slow websocket client (ARCHITECTURE rule 7).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import trio

Event = Mapping[str, Any]

DEFAULT_BUFFER = 256


class Subscription:
    """One subscriber's bounded queue. Iterate it to receive events (``lagged`` included)."""

    def __init__(self, bus: EventBus, maxlen: int) -> None:
        self._bus = bus
        self._maxlen = maxlen
        self._pending: deque[Event] = deque()
        self._dropped = 0
        self._wakeup = trio.Event()
        self._closed = False

    def _offer(self, event: Event) -> None:
        if len(self._pending) >= self._maxlen:
            self._dropped += 1
        else:
            self._pending.append(event)
        self._wakeup.set()

    def get_nowait(self) -> Event | None:
        """The next event (a ``lagged`` notice first if messages were lost), or None."""
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return {"type": "lagged", "dropped": dropped}
        if self._pending:
            return self._pending.popleft()
        return None

    async def get(self) -> Event:
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._bus._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except trio.EndOfChannel:
                return

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            subscriber._offer(event)

    def subscribe(self, maxlen: int = DEFAULT_BUFFER) -> Subscription:
        subscription = Subscription(self, maxlen)
        self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """End every subscription (shutdown): iterators finish after their pending events."""
        for subscriber in list(self._subscribers):
            subscriber.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
