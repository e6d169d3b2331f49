"""The idle timer alone, on trio's autojump clock (no real process involved)."""

from __future__ import annotations

import trio

from llama_swap_trio.upstream.ttl import IdleTimer


class Expiries:
    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(trio.current_time())


async def test_reports_once_after_ttl_of_idleness(autojump_clock: trio.abc.Clock) -> None:
    # given a timer with ttl 300 s, armed at ready time
    fired = Expiries()
    timer = IdleTimer(300, fired)
    t0 = trio.current_time()
    timer.arm()
    # when nothing happens for an hour
    with trio.move_on_after(3600):
        await timer.run()
    # then it reported exactly once, at the ttl
    assert len(fired.at) == 1
    assert 299.9 <= fired.at[0] - t0 <= 300.1


async def test_never_reports_while_requests_are_in_flight(
    autojump_clock: trio.abc.Clock,
) -> None:
    # given a request in flight for far longer than the ttl
    fired = Expiries()
    timer = IdleTimer(10, fired)
    timer.arm()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        timer.set_in_flight(1)
        await trio.sleep(100)
        # then nothing was reported
        assert fired.at == []
        # when it ends, the ttl counts from that moment
        ended = trio.current_time()
        timer.set_in_flight(0)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert len(fired.at) == 1
    assert 9.9 <= fired.at[0] - ended <= 10.1


async def test_activity_restarts_the_idle_period(autojump_clock: trio.abc.Clock) -> None:
    fired = Expiries()
    timer = IdleTimer(10, fired)
    timer.arm()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.sleep(8)
        timer.set_in_flight(2)
        timer.set_in_flight(0)  # a short request at t=8
        await trio.sleep(8)  # t=16: only 8 s idle
        assert fired.at == []
        await trio.sleep(4)  # t=20: 12 s idle
        assert len(fired.at) == 1
        nursery.cancel_scope.cancel()


async def test_is_rearmed_by_a_new_start(autojump_clock: trio.abc.Clock) -> None:
    # given a timer that already reported once
    fired = Expiries()
    timer = IdleTimer(5, fired)
    timer.arm()
    with trio.move_on_after(6):
        await timer.run()
    assert len(fired.at) == 1
    # when the model is started again (arm) and stays idle
    timer.arm()
    with trio.move_on_after(6):
        await timer.run()
    # then it reports again
    assert len(fired.at) == 2


async def test_ttl_zero_never_reports(autojump_clock: trio.abc.Clock) -> None:
    fired = Expiries()
    timer = IdleTimer(0, fired)
    timer.arm()
    with trio.move_on_after(10_000):
        await timer.run()
        await trio.sleep_forever()
    assert fired.at == []


async def test_a_ttl_set_by_a_reload_applies_to_the_idle_period_under_way(
    autojump_clock: trio.abc.Clock,
) -> None:
    # given a timer with no ttl, idle since t0
    fired = Expiries()
    timer = IdleTimer(0, fired)
    t0 = trio.current_time()
    timer.arm()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.sleep(100)
        assert fired.at == []
        # when a reload sets a ttl of 60 s: the model has been idle for longer already
        timer.set_ttl(60)
        await trio.sleep(1)
        # then it reports at once; and a ttl of 0 again silences it
        assert len(fired.at) == 1
        assert fired.at[0] - t0 == 100
        timer.set_ttl(0)
        timer.arm()
        await trio.sleep(1000)
        assert len(fired.at) == 1
        nursery.cancel_scope.cancel()
