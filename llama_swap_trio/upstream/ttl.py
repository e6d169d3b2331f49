"""The idle timer behind ``ttl``: report once when a ready model has been idle long enough.

Idle time counts from the later of "became ready" (:meth:`IdleTimer.arm`) and "the count of
requests in flight dropped to 0" (:meth:`IdleTimer.set_in_flight`), and it is paused while any
request is in flight, so a request longer than the ttl is never cut (llama-swap #25). Counting from
the ready time fixes llama-swap's quirk of unloading at once a model nobody used after its start.

The timer only reports (``on_expire``); deciding to unload is the router's job. It reports once per
idle period: the next report needs a new period (a request that ends, a new start, or the router
declining the report, which calls :meth:`IdleTimer.arm` again).
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class IdleTimer:
    def __init__(self, ttl: float, on_expire: Callable[[], None]) -> None:
        """Args:
        ttl: seconds of idleness before ``on_expire``; 0 (or less) = never.
        on_expire: called (synchronously, from :meth:`run`) when the ttl is reached.
        """
        self._ttl = ttl
        self._on_expire = on_expire
        self._in_flight = 0
        # set by arm(), which the owner calls when the model becomes ready, before run()
        self._idle_since = 0.0
        self._reported = False
        self._changed = trio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def arm(self) -> None:
        """Start a new idle period now (the model just became ready, or the router declined the
        last report)."""
        self._idle_since = trio.current_time()
        self._reported = False
        self._wake()

    def set_in_flight(self, count: int) -> None:
        """The router's count of requests in flight changed. May be called at any time."""
        count = max(count, 0)
        if count == 0 and self._in_flight > 0:
            self._idle_since = trio.current_time()
            self._reported = False
        self._in_flight = count
        self._wake()

    def set_ttl(self, ttl: float) -> None:
        """A reload changed the ttl: it applies to the idle period under way."""
        self._ttl = ttl
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Watch until cancelled (the caller runs this only while the model is ready)."""
        while True:
            changed = self._changed
            # ttl 0 = never; a reload may set one later (set_ttl wakes us)
            if self._ttl <= 0 or self._in_flight > 0 or self._reported:
                await changed.wait()
                continue
            with trio.move_on_at(self._idle_since + self._ttl):
                await changed.wait()
                continue
            self._reported = True
            self._on_expire()
