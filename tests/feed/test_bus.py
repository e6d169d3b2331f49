"""The event bus: publishers never block, slow subscribers lose messages and are told."""

from __future__ import annotations

import trio
import trio.testing

from llama_swap_trio.feed.bus import EventBus


def test_every_subscriber_receives_published_events_in_order() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()

    bus.publish({"type": "a"})
    bus.publish({"type": "b"})

    for sub in (first, second):
        assert sub.get_nowait() == {"type": "a"}
        assert sub.get_nowait() == {"type": "b"}
        assert sub.get_nowait() is None


def test_a_full_subscriber_loses_messages_and_is_told_how_many_where_the_gap_is() -> None:
    # given a subscriber with room for two events
    bus = EventBus()
    slow = bus.subscribe(maxlen=2)

    # when five are published, it reads one, and two more are published
    for n in range(5):
        bus.publish({"n": n})
    assert slow.get_nowait() == {"n": 0}
    bus.publish({"n": 5})
    bus.publish({"n": 6})

    # then it reads what it kept, the gap in place, what came after, and a second gap
    assert slow.get_nowait() == {"n": 1}
    assert slow.get_nowait() == {"type": "lagged", "dropped": 3}
    assert slow.get_nowait() == {"n": 5}
    assert slow.get_nowait() == {"type": "lagged", "dropped": 1}
    assert slow.get_nowait() is None


def test_a_slow_subscriber_does_not_affect_a_fast_one() -> None:
    bus = EventBus()
    slow, fast = bus.subscribe(maxlen=1), bus.subscribe(maxlen=1)

    for n in range(100):
        bus.publish({"n": n})
        assert fast.get_nowait() == {"n": n}

    assert slow.get_nowait() == {"n": 0}
    assert slow.get_nowait() == {"type": "lagged", "dropped": 99}


def test_log_events_reach_only_subscribers_that_asked_for_them() -> None:
    bus = EventBus()
    plain, with_logs = bus.subscribe(maxlen=1), bus.subscribe(logs=True)

    bus.publish({"type": "log", "source": "proxy", "line": "x"})
    bus.publish({"type": "queue", "queue": []})

    # the log line neither reaches nor lags the plain subscriber
    assert plain.get_nowait() == {"type": "queue", "queue": []}
    assert plain.get_nowait() is None
    assert with_logs.get_nowait() == {"type": "log", "source": "proxy", "line": "x"}
    assert with_logs.get_nowait() == {"type": "queue", "queue": []}


def test_closed_subscriptions_stop_receiving() -> None:
    bus = EventBus()
    with bus.subscribe():
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0
    bus.publish({"type": "nobody listens"})


async def test_a_waiting_reader_wakes_on_publish_and_ends_on_close() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    received: list[object] = []

    async def read_all() -> None:
        async for event in sub:
            received.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await trio.testing.wait_all_tasks_blocked()
        bus.publish({"type": "x"})
        await trio.testing.wait_all_tasks_blocked()
        bus.close()

    assert received == [{"type": "x"}]
    assert bus.subscriber_count == 0


async def test_closing_the_bus_delivers_buffered_events_first() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish({"n": 1})
    bus.publish({"n": 2})

    bus.close()

    assert sub.closed
    assert [event async for event in sub] == [{"n": 1}, {"n": 2}]


async def test_a_subscription_on_a_closed_bus_ends_at_once() -> None:
    bus = EventBus()
    bus.close()

    sub = bus.subscribe()
    bus.publish({"type": "too late"})

    assert sub.closed
    assert bus.subscriber_count == 0
    with trio.fail_after(1):
        assert [event async for event in sub] == []
        await sub.wait_closed()
