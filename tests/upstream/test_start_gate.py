"""The start gate: a reloaded configuration's Upstream spawns nothing while the old one stops."""

from __future__ import annotations

import trio
import trio.testing

from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.upstream.api import UpstreamEvent, UpstreamState
from llama_swap_trio.upstream.upstream import Upstream
from tests.upstream.helpers import fake_argv, free_port, make_model


async def test_start_waits_for_the_gate_and_spawns_nothing_before_it_opens(
    nursery: trio.Nursery,
) -> None:
    # given an Upstream whose gate is closed
    port = free_port()
    gate = trio.Event()
    events: list[UpstreamEvent] = []
    upstream = Upstream(
        make_model(fake_argv(port), port=port),
        health_check_timeout=20,
        notify=events.append,
        logs=LogBuffer(),
        start_gate=gate,
    )
    await nursery.start(upstream.run)
    started = trio.Event()

    async def start() -> None:
        await upstream.start()
        started.set()

    # when a start is requested
    nursery.start_soon(start)
    await trio.testing.wait_all_tasks_blocked()

    # then nothing was spawned and the state did not move
    assert (upstream.state, upstream.pid, events) == (UpstreamState.STOPPED, None, [])

    # and once the gate opens, the same start goes through
    gate.set()
    with trio.fail_after(20):
        await started.wait()
    assert upstream.state is UpstreamState.READY
    await upstream.stop()


async def test_a_shutdown_while_waiting_at_the_gate_fails_the_start_without_spawning(
    nursery: trio.Nursery,
) -> None:
    port = free_port()
    gate = trio.Event()
    upstream = Upstream(
        make_model(fake_argv(port), port=port),
        health_check_timeout=20,
        notify=lambda event: None,
        logs=LogBuffer(),
        start_gate=gate,
    )
    outcome: list[BaseException] = []
    async with trio.open_nursery() as inner:
        await inner.start(upstream.run)

        async def start() -> None:
            try:
                await upstream.start()
            except Exception as error:
                outcome.append(error)

        nursery.start_soon(start)
        await trio.testing.wait_all_tasks_blocked()
        inner.cancel_scope.cancel()  # the generation is torn down
    gate.set()
    with trio.fail_after(5):
        while not outcome:
            await trio.sleep(0.01)
    assert "shutdown" in str(outcome[0])
    assert upstream.pid is None
