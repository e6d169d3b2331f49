"""Log lines for the feed: the proxy's log as ``log`` messages, never an API key."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio

from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import REDACTED, FeedLogHandler, Redactor, upstream_log_event


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.feed.logs")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.handlers.clear()


def test_redactor_hides_every_key_and_leaves_other_text() -> None:
    redact = Redactor(["sekret", "sekret-long", ""])

    assert redact("GET /x?api_key=sekret-long and sekret") == (
        f"GET /x?api_key={REDACTED} and {REDACTED}"
    )
    assert redact("nothing to hide") == "nothing to hide"
    assert Redactor([])("sekret") == "sekret"


def test_upstream_lines_are_redacted_log_messages() -> None:
    event = upstream_log_event("qwen", "auth: Bearer k1", Redactor(["k1"]))

    assert event == {
        "type": "log",
        "source": "upstream",
        "model": "qwen",
        "line": f"auth: Bearer {REDACTED}",
    }


async def test_proxy_records_become_log_messages_one_per_line(logger: logging.Logger) -> None:
    # given a handler on a bus with a subscriber that wants logs
    bus = EventBus()
    handler = FeedLogHandler(bus, Redactor(["k1"]))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    with bus.subscribe(logs=True) as feed:
        # when a record (with a key in it, spanning two lines) is logged
        logger.info("first line with k1\nsecond line")

        # then each line is a proxy log message, the key hidden
        assert feed.get_nowait() == {
            "type": "log",
            "source": "proxy",
            "line": f"INFO first line with {REDACTED}",
        }
        assert feed.get_nowait() == {"type": "log", "source": "proxy", "line": "second line"}
        assert feed.get_nowait() is None


async def test_records_from_other_threads_reach_the_bus_through_the_trio_thread(
    logger: logging.Logger,
) -> None:
    bus = EventBus()
    logger.addHandler(FeedLogHandler(bus, Redactor([])))
    with bus.subscribe(logs=True) as feed:
        await trio.to_thread.run_sync(logger.warning, "from a worker thread")

        with trio.fail_after(5):
            event = await feed.get()
    assert event == {"type": "log", "source": "proxy", "line": "from a worker thread"}


async def test_a_log_call_made_while_publishing_is_dropped_not_recursed(
    logger: logging.Logger,
) -> None:
    # given a bus whose publish logs (the mistake the handler guards against)
    class LoggingBus(EventBus):
        def publish(self, event: object) -> None:  # type: ignore[override]
            logger.info("publishing")
            super().publish(event)  # type: ignore[arg-type]

    bus = LoggingBus()
    logger.addHandler(FeedLogHandler(bus, Redactor([])))
    with bus.subscribe(logs=True) as feed:
        logger.info("hello")

        assert feed.get_nowait() == {"type": "log", "source": "proxy", "line": "hello"}
        assert feed.get_nowait() is None
