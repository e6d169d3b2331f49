"""The event bus: publishers never block, slow subscribers lose messages and are told."""

from __future__ import annotations

import trio

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


def test_a_full_subscriber_loses_messages_and_is_told_how_many() -> None:
    bus = EventBus()
    slow = bus.subscribe(maxlen=2)

    for n in range(5):
        bus.publish({"n": n})

    assert slow.get_nowait() == {"type": "lagged", "dropped": 3}
    assert slow.get_nowait() == {"n": 0}
    assert slow.get_nowait() == {"n": 1}
    assert slow.get_nowait() is None


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
