"""A fake upstream for router tests: timings and failures on demand, the real TTL timer."""

from __future__ import annotations

import time

import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.upstream.api import (
    IdleExpired,
    Notify,
    StartFailed,
    StateChanged,
    UpstreamState,
)
from llama_swap_trio.upstream.ttl import IdleTimer


class FakeUpstream:
    """``start`` sleeps ``start_delay`` (a stop during it aborts it with reason ``cancelled``),
    then fails with ``fail_with`` if set (once) or becomes ready; ``stop`` sleeps ``stop_delay``.
    A failure stays ``stopping`` for ``fail_teardown`` seconds after ``start`` raised (a group left
    behind), in the task :meth:`run` provides.
    Every transition is reported through ``notify`` like the real Upstream. With a ``ttl``, the
    real :class:`IdleTimer` reports ``IdleExpired`` while ready, armed at ready and by
    ``rearm_idle``, as in the Upstream; :meth:`run_timer` must run for that."""

    def __init__(
        self,
        model: ModelConfig,
        notify: Notify,
        *,
        start_delay: float = 1.0,
        stop_delay: float = 0.5,
    ) -> None:
        self._model = model
        self._notify = notify
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.fail_with: StartFailed | None = None
        self.fail_teardown = 0.0
        self._background: trio.Nursery | None = None
        self._state = UpstreamState.STOPPED
        self._generation = 0
        self._start_scope: trio.CancelScope | None = None
        self._settled = trio.Event()
        self.starts = 0
        self.stops = 0
        self.in_flight_reports: list[int] = []
        #: (state, router's last in-flight report) whenever a stop really stops a ready process
        self.stopped_with_in_flight: list[int] = []
        self.rearms = 0
        #: a model with ``sleep`` configured: ``evict`` sleeps this long, a start wakes it
        self.sleep_delay = 0.1
        self.wake_delay = 0.1
        self.sleeps = 0
        self.wakes = 0
        self._timer = IdleTimer(model.ttl, self._on_idle)

    @property
    def model(self) -> ModelConfig:
        return self._model

    @property
    def state(self) -> UpstreamState:
        return self._state

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def in_flight(self) -> int:
        return self.in_flight_reports[-1] if self.in_flight_reports else 0

    def _set(self, state: UpstreamState, error: str | None = None) -> None:
        previous, self._state = self._state, state
        self._notify(StateChanged(self._model.id, state, previous, time.time(), error))
        if state == UpstreamState.READY:
            self._timer.arm()
        if state in (UpstreamState.STOPPED, UpstreamState.READY):
            self._settled.set()
            self._settled = trio.Event()

    async def _wait_settled(self) -> None:
        while self._state in (UpstreamState.STARTING, UpstreamState.STOPPING):
            await self._settled.wait()

    async def start(self) -> None:
        await self._wait_settled()
        if self._state == UpstreamState.READY:
            return
        if self._state == UpstreamState.SLEEPING:
            self.wakes += 1
            self._set(UpstreamState.STARTING)
            await trio.sleep(self.wake_delay)
            self._set(UpstreamState.READY)
            return
        self.starts += 1
        self._set(UpstreamState.STARTING)
        with trio.CancelScope() as scope:
            self._start_scope = scope
            await trio.sleep(self.start_delay)
        self._start_scope = None
        if scope.cancelled_caught:
            self._set(UpstreamState.STOPPED, "stopped while starting")
            raise StartFailed(self._model.id, "cancelled", "stopped while starting")
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            if self.fail_teardown > 0:
                assert self._background is not None, "run() must run for fail_teardown"
                self._set(UpstreamState.STOPPING, str(error))
                self._background.start_soon(self._end_teardown, self.fail_teardown, str(error))
            else:
                self._set(UpstreamState.STOPPED, str(error))
            raise error
        self._generation += 1
        self._set(UpstreamState.READY)

    async def evict(self) -> None:
        """Sleep when the model has a sleep mode (as the Upstream does), else stop."""
        if self._model.sleep is None or self._state != UpstreamState.READY:
            await self.stop()
            return
        self.sleeps += 1
        await trio.sleep(self.sleep_delay)
        self._set(UpstreamState.SLEEPING)

    async def stop(self) -> None:
        if self._start_scope is not None:
            self._start_scope.cancel()
        await self._wait_settled()
        if self._state not in (UpstreamState.READY, UpstreamState.SLEEPING):
            return
        self.stops += 1
        self.stopped_with_in_flight.append(self.in_flight)
        self._set(UpstreamState.STOPPING)
        await trio.sleep(self.stop_delay)
        self._set(UpstreamState.STOPPED)

    def set_in_flight(self, count: int) -> None:
        self.in_flight_reports.append(count)
        self._timer.set_in_flight(count)

    def rearm_idle(self) -> None:
        self.rearms += 1
        self._timer.arm()

    def _on_idle(self) -> None:
        if self._state in (UpstreamState.READY, UpstreamState.SLEEPING):
            self._notify(IdleExpired(self._model.id))

    async def _end_teardown(self, seconds: float, error: str) -> None:
        await trio.sleep(seconds)
        self._set(UpstreamState.STOPPED, error)

    async def run(self) -> None:
        """The background of this upstream: the TTL timer, teardowns after failed starts."""
        async with trio.open_nursery() as nursery:
            self._background = nursery
            nursery.start_soon(self._timer.run)
            await trio.sleep_forever()

    def crash(self) -> None:
        """The process exits on its own after ready."""
        assert self._state == UpstreamState.READY
        self._set(UpstreamState.STOPPED, "exited unexpectedly")

    async def exit_by_itself(self, teardown: float) -> None:
        """The process exits on its own after ready, as the real Upstream reports it: ``stopping``
        (with the error) at once, ``stopped`` once its group is gone ``teardown`` seconds later."""
        assert self._state == UpstreamState.READY
        self._set(UpstreamState.STOPPING, "exited unexpectedly")
        await trio.sleep(teardown)
        self._set(UpstreamState.STOPPED, "exited unexpectedly")
