"""Upstream: one model's server process, from spawn to the last member of its group being gone.

Theory of operation:

1. ``run()`` is a daemon-lifetime task in the upstreams nursery. It owns a nursery in which every
   process of this model lives, one at a time, each inside its own cancel scope (an *attempt*).
   ``start()`` and ``stop()`` are called from other tasks (the router's swaps); they never own the
   process, they only launch or cancel an attempt and wait for it to settle. A caller that is
   cancelled stops waiting; the process carries on (requests never own processes).
2. The Upstream is the single writer of its state. Transitions happen without an ``await`` between
   the check and the write, so two callers can never both decide to start:

   ========  =============  ==========================================================
   state     start()        stop()
   ========  =============  ==========================================================
   stopped   launch attempt returns at once (idempotent)
   starting  wait for it    cancel the attempt (start aborted), wait until gone
   ready     return         cancel the attempt, wait until gone
   stopping  wait, restart  wait until gone
   sleeping  wake (or a     cancel the attempt, wait until gone
             fresh start)
   shutdown  StartFailed    returns at once
   ========  =============  ==========================================================

   "stopping, then start" is llama-swap #946: the start waits for the stop and then starts, it
   never joins a process that nobody will start.
3. Leaving an attempt's scope, for any reason (stop, failed start, exit, shutdown), runs the
   shielded, bounded teardown: ``cmd_stop`` or SIGTERM to the group, ``unload_timeout``, SIGKILL.
   A server that exited before ready but left members of its group is reported to the waiters
   before that teardown; the state stays ``stopping`` until the group is gone, so the next start
   of the model waits for it (ports never shared).
   Output pumps keep reading during the teardown (a server must not block on its shutdown log),
   then get at most :data:`DRAIN_TIME` to reach EOF: grandchildren may hold the pipes forever.
4. Readiness races the health probe against the process's exit and the health timeout, so an
   early exit fails the start at once with the last lines the server printed.
5. A ready process that exits by itself turns the state to ``stopping`` (with the error) the moment
   ``wait()`` returns, before the drain and the teardown, so nobody is sent to a dead server.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Literal

import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.upstream.api import (
    IdleExpired,
    LogLine,
    Notify,
    StartFailed,
    StateChanged,
    UpstreamLike,
    UpstreamState,
)
from llama_swap_trio.upstream.guard import ProcessGuard
from llama_swap_trio.upstream.health import watch_health
from llama_swap_trio.upstream.probe import Target, health_status, port_answers
from llama_swap_trio.upstream.process import (
    OnLine,
    child_env,
    pump_lines,
    spawn_gated,
    terminate_group,
)
from llama_swap_trio.upstream.procfs import group_alive
from llama_swap_trio.upstream.sleep import call_endpoint
from llama_swap_trio.upstream.ttl import IdleTimer

log = logging.getLogger(__name__)

#: seconds the output pumps may take to reach EOF once the process group is gone (or the direct
#: child exited before ready) before we stop reading
DRAIN_TIME = 0.5
#: pause between health probes for the first PROBE_FAST_SECONDS of a start, then the largest pause
#: they back off to. A small model's llama-server is healthy 100-200 ms after spawn, so the fast
#: phase decides how late most swaps notice readiness (half the interval on average: 2.5 ms, as
#: the swap floor of benchmarks/real_swap.py polls), except that a line the server prints
#: triggers a probe at once: llama-server prints "listening" as it becomes ready, so its readiness
#: is seen within a probe's time. A long load then costs 40 probes a second (plus one per printed
#: line, at most one a millisecond), well under 1 % of a core.
PROBE_INTERVAL_MIN = 0.005
PROBE_FAST_SECONDS = 2.0
PROBE_INTERVAL_MAX = 0.025
#: a line the server prints triggers a probe at once (see ``_wait_ready``), but probes start at
#: least this far apart however fast it prints
PROBE_SPACING = 0.001
#: bytes of last output carried by errors
TAIL_BYTES = 2048

S = UpstreamState


class _Attempt:
    """One process of this model, from the start request until its group is gone."""

    def __init__(self) -> None:
        #: cancelled by stop(); the process's teardown runs when it is left
        self.scope = trio.CancelScope()
        #: reading stdout/stderr: shielded, so a shutdown does not stop the reading before the
        #: teardown is done; cancelled explicitly after the drain
        self.pump_scope = trio.CancelScope(shield=True)
        self.pumps_eof = trio.Event()
        #: set when the start is decided: ready, or failed (then ``error`` is set)
        self.settled = trio.Event()
        #: set when the group is gone and the state is final
        self.done = trio.Event()
        self.error: StartFailed | None = None
        #: why a ready process ended by itself
        self.exit_error: str | None = None
        #: the health watchdog found it wedged (``exit_error`` says why)
        self.wedged = False
        self.proc: trio.Process | None = None
        self.tail: deque[str] = deque(maxlen=64)
        #: set by every line the process prints; each wait of the health probe clears it
        self.printed = trio.Event()

    async def next_line_or(self, seconds: float) -> None:
        """Wait ``seconds``, or less: until the process prints a line (at once if it printed
        one since the last wait)."""
        if not self.printed.is_set():
            with trio.move_on_after(seconds):
                await self.printed.wait()
        self.printed = trio.Event()

    def tail_text(self) -> str:
        picked: list[str] = []
        size = 0
        for line in reversed(self.tail):
            size += len(line) + 1
            if size > TAIL_BYTES:
                if not picked:
                    picked.append(line[-TAIL_BYTES:])
                break
            picked.append(line)
        return "\n".join(reversed(picked))


class Upstream(UpstreamLike):
    """The supervisor of one model's server process (see the module docstring)."""

    def __init__(
        self,
        model: ModelConfig,
        *,
        health_check_timeout: float,
        notify: Notify,
        logs: LogBuffer,
        guard: ProcessGuard | None = None,
        start_gate: trio.Event | None = None,
        generation: int = 0,
    ) -> None:
        """Nothing runs until :meth:`run`.

        Args:
            start_gate: no process is spawned before this event is set. A configuration reload
                passes "the processes it retires are all gone", so the new process never shares
                a ``${PORT}`` with an old one that is still stopping.
            generation: where :attr:`generation` counts from: a model restarted by a reload
                continues its predecessor's count, so no pooled connection is ever reused.
        """
        self._model = model
        self._health_timeout = health_check_timeout
        self._notify = notify
        self._logs = logs
        self._guard = guard
        self._start_gate = start_gate
        self._target = Target.parse(model.proxy)
        self._state = S.STOPPED
        self._generation = generation
        self._attempt: _Attempt | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._timer = IdleTimer(model.ttl, self._on_idle)

    # -- read side ---------------------------------------------------------------------------

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
    def pid(self) -> int | None:
        """The pid (= pgid) of the running process, or None."""
        attempt = self._attempt
        if attempt is None or attempt.proc is None or attempt.done.is_set():
            return None
        return attempt.proc.pid

    # -- life --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own this model's processes until cancelled; then stop them and end in ``shutdown``."""
        if self._nursery is not None or self._closing:
            raise RuntimeError(f"Upstream({self._model.id!r}).run() may run only once")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._closing = True
        finally:
            self._closing = True
            self._nursery = None
            self._set_state(S.SHUTDOWN)

    async def start(self) -> None:
        """Start the process (unless it runs) and return once it is ready.

        Raises:
            StartFailed: with reason spawn, exited, timeout, port or cancelled.
            RuntimeError: :meth:`run` is not running.
        """
        model_id = self._model.id
        while True:
            state = self._state
            attempt = self._attempt
            if state is S.SHUTDOWN or self._closing:
                raise StartFailed(model_id, "cancelled", f"[{model_id}] shutdown")
            if state is S.READY:
                return
            if state is S.SLEEPING:
                assert attempt is not None
                if await self._wake(attempt):
                    return
                continue
            if state is S.STOPPING:
                assert attempt is not None
                await attempt.done.wait()
                continue
            if state is S.STOPPED:
                gate = self._start_gate
                if gate is not None and not gate.is_set():
                    await gate.wait()
                    continue  # the world may have changed meanwhile (a shutdown, another start)
                attempt = self._launch()
            assert attempt is not None
            await attempt.settled.wait()
            if attempt.error is not None:
                err = attempt.error
                # a fresh exception per waiter: several tasks may raise it at once
                raise StartFailed(err.model, err.reason, err.message, err.output)
            exit_error = self._exited_after_ready(attempt)
            if exit_error is None and self._attempt is attempt and self._state is S.READY:
                return
            if exit_error is not None:
                # It died within a tick of becoming ready: an exit (502) with its last words, not
                # a stop (503), and nobody is handed a dead server.
                with trio.move_on_after(DRAIN_TIME):
                    await attempt.pumps_eof.wait()
                raise StartFailed(model_id, "exited", exit_error, attempt.tail_text())
            raise StartFailed(
                model_id, "cancelled", f"[{model_id}] stopped right after it became ready"
            )

    async def stop(self) -> None:
        """Stop the process group (aborting a start) and return when it is gone. Idempotent."""
        attempt = self._attempt
        if self._state in (S.STARTING, S.READY, S.SLEEPING):
            assert attempt is not None
            self._set_state(S.STOPPING)
            attempt.scope.cancel()
        if attempt is not None and self._state is S.STOPPING:
            await attempt.done.wait()

    async def evict(self) -> None:
        """Make room for another model (``UpstreamLike.evict``): a ready model with a sleep mode
        is put to sleep (state ``sleeping``, same process and pid); one without, or whose sleep
        call fails, is stopped (SPEC 6.7)."""
        sleep = self._model.sleep
        attempt = self._attempt
        if sleep is None or self._state is not S.READY or attempt is None:
            await self.stop()
            return
        why = await call_endpoint(self._target, sleep.sleep, self._health_timeout)
        if why is None and self._attempt is attempt and self._state is S.READY:
            self._set_state(S.SLEEPING)
            log.info("[%s] asleep (%s), pid %s", self._model.id, sleep.sleep, self.pid)
            return
        if why is not None:
            log.warning("[%s] %s; stopping it instead", self._model.id, why)
        await self.stop()

    async def _wake(self, attempt: _Attempt) -> bool:
        """Wake the sleeping process (the wake call, then the health check); True once ready.
        False: it must start afresh (a failed wake, stopped here, or its process exited).

        Raises:
            StartFailed: stopped (an unload, the shutdown) while waking.
        """
        model = self._model
        assert model.sleep is not None
        self._set_state(S.STARTING)
        began = trio.current_time()
        why = await call_endpoint(self._target, model.sleep.wake, self._health_timeout)
        if why is None:
            why = await self._healthy_again(began + self._health_timeout)
        if self._attempt is not attempt or self._state is not S.STARTING:
            if attempt.exit_error is None:
                raise StartFailed(model.id, "cancelled", f"[{model.id}] stopped while waking")
            return False  # it exited while waking: a fresh start
        if why is not None:
            log.warning("[%s] %s; restarting it", model.id, why)
            await self.stop()
            return False
        self._set_state(S.READY)
        self._timer.arm()
        log.info("[%s] awake in %.2f s", model.id, trio.current_time() - began)
        return True

    async def _healthy_again(self, deadline: float) -> str | None:
        """None once the check endpoint answers 200 (before ``deadline``), else why not."""
        path = self._model.check_endpoint
        if path == "none":
            return None
        path = path if path.startswith("/") else "/" + path
        with trio.move_on_at(deadline):
            while True:
                if await health_status(self._target, path) == 200:
                    return None
                await trio.sleep(PROBE_INTERVAL_MAX)
        return f"GET {path} did not answer 200 after the wake"

    def set_in_flight(self, count: int) -> None:
        self._timer.set_in_flight(count)

    def reconfigure(self, model: ModelConfig, *, health_check_timeout: float) -> None:
        """A reload kept this model (same launch definition): take its other settings at once.

        The running process is untouched; ``ttl`` applies to the idle period under way.
        """
        self._model = model
        self._health_timeout = health_check_timeout
        self._timer.set_ttl(model.ttl)

    def rearm_idle(self) -> None:
        self._timer.arm()

    # -- internals ---------------------------------------------------------------------------

    def _set_state(
        self, new: UpstreamState, error: str | None = None, reason: str | None = None
    ) -> None:
        previous = self._state
        if new is previous:
            return
        self._state = new
        log.debug("[%s] %s -> %s", self._model.id, previous, new)
        self._notify(StateChanged(self._model.id, new, previous, time.time(), error, reason))

    @staticmethod
    def _left_a_group(attempt: _Attempt) -> bool:
        """The server exited before ready, but members of its group live on (its teardown may
        take up to unload_timeout). Else the teardown is immediate, and the waiters are told
        after it, once the state is ``stopped`` again."""
        error, proc = attempt.error, attempt.proc
        return (
            error is not None
            and error.reason == "exited"
            and proc is not None
            and group_alive(proc.pid)
        )

    def _exited_after_ready(self, attempt: _Attempt) -> str | None:
        """Why ``attempt``'s process, once ready, ended by itself; None while it runs (or when it
        was stopped). Reading ``returncode`` polls, so an exit the supervisor has not yet seen
        counts too."""
        if attempt.exit_error is not None:
            return attempt.exit_error
        proc = attempt.proc
        if proc is None or attempt.scope.cancel_called:
            return None
        code = proc.returncode
        if code is None:
            return None
        return (
            f"[{self._model.id}] upstream process exited right after it became ready (code {code})"
        )

    def _wedged(self, attempt: _Attempt, why: str) -> None:
        """The health watchdog gave up on it: stop it (the teardown says why, SPEC 6.4)."""
        log.warning("%s", why)
        attempt.exit_error = why
        attempt.wedged = True
        attempt.scope.cancel()

    def _on_idle(self) -> None:
        log.info("[%s] idle for its ttl of %d s", self._model.id, self._model.ttl)
        self._notify(IdleExpired(self._model.id))

    def _launch(self) -> _Attempt:
        if self._nursery is None:
            raise RuntimeError(f"Upstream({self._model.id!r}).run() is not running")
        attempt = _Attempt()
        self._attempt = attempt
        self._set_state(S.STARTING)
        self._nursery.start_soon(self._supervise, attempt)
        return attempt

    async def _supervise(self, attempt: _Attempt) -> None:
        """One attempt, start to finish. Never raises but Cancelled (start failures go to the
        waiters through ``attempt.error``)."""
        try:
            async with trio.open_nursery() as pumps:
                try:
                    with attempt.scope:
                        await self._attempt_body(attempt, pumps)
                except StartFailed as exc:
                    attempt.error = exc
                finally:
                    if self._state in (S.STARTING, S.READY, S.SLEEPING):
                        why = attempt.error.message if attempt.error else attempt.exit_error
                        self._set_state(S.STOPPING, why, "health" if attempt.wedged else None)
                    if self._left_a_group(attempt):
                        # Fail the start now, not after the teardown: a grandchild that ignores
                        # SIGTERM would hold the waiters for unload_timeout. The state stays
                        # stopping until the group is gone, so a new start still waits for it.
                        attempt.settled.set()
                    with trio.CancelScope(shield=True):
                        await self._teardown(attempt)
        finally:
            shutdown = self._closing or trio.current_effective_deadline() == float("-inf")
            self._finish(attempt, shutdown=shutdown)

    async def _attempt_body(self, attempt: _Attempt, pumps: trio.Nursery) -> None:
        model = self._model
        if model.port is not None and await port_answers(self._target.host, model.port):
            raise StartFailed(
                model.id,
                "port",
                f"[{model.id}] port {model.port} ({self._target.host}) is already in use by "
                f"another process; not starting {model.id} (is an old server still running?)",
            )
        try:
            proc, go_ahead = await spawn_gated(model.argv, child_env(model.env))
        except (OSError, ValueError) as exc:  # ValueError: Popen refuses e.g. a NUL byte
            raise StartFailed(
                model.id, "spawn", f"[{model.id}] cannot run {model.argv[0]!r}: {exc}"
            ) from exc
        # No await between the spawn and these lines: the process is always known to the teardown
        # and to the guard; only then may it run the command (the launcher waits until then).
        attempt.proc = proc
        if self._guard is not None:
            self._guard.register(
                proc.pid, proc.pid, model.argv, model=model.id, grace=float(model.unload_timeout)
            )
        go_ahead.send()
        pumps.start_soon(self._pump, attempt, proc)
        log.info("[%s] started pid %d: %s", model.id, proc.pid, model.cmd)

        started_at = trio.current_time()
        await self._wait_ready(attempt, proc)
        self._generation += 1
        self._set_state(S.READY)
        attempt.settled.set()
        log.info("[%s] ready in %.2f s", model.id, trio.current_time() - started_at)

        self._timer.arm()
        async with trio.open_nursery() as ready:
            ready.start_soon(self._timer.run)
            ready.start_soon(
                watch_health,
                self._target,
                lambda: self._model,
                lambda: self._state is S.READY,
                lambda why: self._wedged(attempt, why),
            )
            code = await proc.wait()
            ready.cancel_scope.cancel()
        # Say so at once, before the drain and the teardown: a model still called ready would be
        # granted requests that can only fail (502) instead of being started again.
        attempt.exit_error = f"[{model.id}] upstream process exited unexpectedly (code {code})"
        self._set_state(S.STOPPING, attempt.exit_error)
        with trio.move_on_after(DRAIN_TIME):
            await attempt.pumps_eof.wait()
        log.warning("%s; last output:\n%s", attempt.exit_error, attempt.tail_text())

    async def _wait_ready(self, attempt: _Attempt, proc: trio.Process) -> None:
        model = self._model
        if model.check_endpoint == "none":
            return
        path = model.check_endpoint
        if not path.startswith("/"):
            path = "/" + path
        outcome: Literal["ready", "exited"] | None = None

        async def healthy(cancel: trio.CancelScope) -> None:
            nonlocal outcome
            interval = PROBE_INTERVAL_MIN
            slow_from = trio.current_time() + PROBE_FAST_SECONDS
            while True:
                started = trio.current_time()
                if await health_status(self._target, path) == 200:
                    break
                # A server that prints a line has often just changed state (llama-server
                # prints "listening" as it becomes ready): probe again at once, not up to an
                # interval later. A line printed during the probe counts too.
                await attempt.next_line_or(interval)
                await trio.sleep_until(started + PROBE_SPACING)  # a chatty server: bounded rate
                if trio.current_time() >= slow_from:
                    interval = min(interval * 1.5, PROBE_INTERVAL_MAX)
            outcome = outcome or "ready"
            cancel.cancel()

        async def exited(cancel: trio.CancelScope) -> None:
            nonlocal outcome
            await proc.wait()
            outcome = outcome or "exited"
            cancel.cancel()

        with trio.move_on_after(self._health_timeout):
            async with trio.open_nursery() as race:
                race.start_soon(healthy, race.cancel_scope)
                race.start_soon(exited, race.cancel_scope)
        if outcome == "ready":
            return
        if outcome == "exited":
            # Its last words may still be in the pipe: let the pumps catch up (bounded).
            with trio.move_on_after(DRAIN_TIME):
                await attempt.pumps_eof.wait()
            raise StartFailed(
                model.id,
                "exited",
                f"[{model.id}] upstream command exited prematurely (code {proc.returncode})",
                attempt.tail_text(),
            )
        raise StartFailed(
            model.id,
            "timeout",
            f"[{model.id}] health check timed out after {self._health_timeout:g} s "
            f"(GET {self._target.url(path)} never answered 200)",
            attempt.tail_text(),
        )

    async def _pump(self, attempt: _Attempt, proc: trio.Process) -> None:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            with attempt.pump_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump_lines, proc.stdout, self._sink(attempt, "stdout"))
                    nursery.start_soon(pump_lines, proc.stderr, self._sink(attempt, "stderr"))
        finally:
            attempt.pumps_eof.set()
            with trio.CancelScope(shield=True):
                await proc.stdout.aclose()
                await proc.stderr.aclose()

    def _sink(self, attempt: _Attempt, stream: Literal["stdout", "stderr"]) -> OnLine:
        model_id = self._model.id

        def on_line(line: str) -> None:
            attempt.tail.append(line)
            attempt.printed.set()
            self._logs.append(line)
            self._notify(LogLine(model_id, stream, line))

        return on_line

    async def _teardown(self, attempt: _Attempt) -> None:
        """End the group (bounded), unregister it, drain the pumps briefly. Run shielded."""
        proc = attempt.proc
        if proc is None:
            return
        model = self._model
        stop_argv: list[str] = []
        if model.cmd_stop and proc.returncode is None:
            try:
                stop_argv = model.stop_argv(proc.pid)
            except ValueError as exc:
                log.warning("[%s] bad cmd_stop (%s): sending SIGTERM instead", model.id, exc)
        try:
            gone = await terminate_group(
                proc,
                grace=float(model.unload_timeout),
                stop_argv=stop_argv,
                env=child_env(model.env),
                on_stop_output=self._sink(attempt, "stderr"),
            )
            if gone and self._guard is not None:
                self._guard.unregister(proc.pid)
            with trio.move_on_after(DRAIN_TIME):
                await attempt.pumps_eof.wait()
        finally:
            # Whatever happened, stop the shielded pumps: a grandchild may hold the pipes forever
            # and the attempt (and every stop() waiting for it) ends only once they are done.
            attempt.pump_scope.cancel()

    def _finish(self, attempt: _Attempt, *, shutdown: bool) -> None:
        model_id = self._model.id
        if not attempt.settled.is_set() and attempt.error is None:
            why = "shutdown" if shutdown else "start aborted: stopped"
            attempt.error = StartFailed(
                model_id, "cancelled", f"[{model_id}] {why}", attempt.tail_text()
            )
        attempt.settled.set()
        error = attempt.error.message if attempt.error else attempt.exit_error
        self._set_state(S.SHUTDOWN if shutdown else S.STOPPED, error)
        attempt.done.set()
