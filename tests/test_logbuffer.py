"""Log buffers: bounded backlog, lossy live readers that are told what they lost."""

from __future__ import annotations

import trio
import trio.testing

from llama_swap_trio.logbuffer import LogBuffer


def test_backlog_keeps_only_the_newest_lines_within_its_byte_limit() -> None:
    buffer = LogBuffer(max_bytes=30)
    for n in range(10):
        buffer.append(f"line {n:02}")  # 8 chars + newline = 9 bytes

    assert buffer.lines() == ["line 07", "line 08", "line 09"]


def test_tail_returns_the_last_lines_within_a_byte_budget() -> None:
    buffer = LogBuffer()
    for n in range(100):
        buffer.append(f"output {n}")

    tail = buffer.tail(max_bytes=30)

    assert tail.endswith("output 99")
    assert len(tail) <= 30
    assert "output 0\n" not in tail


async def test_reader_gets_backlog_then_live_lines() -> None:
    buffer = LogBuffer()
    buffer.append("old")
    with buffer.reader() as reader:
        buffer.append("new")
        assert await reader.read() == (["old", "new"], 0)


async def test_reader_without_history_skips_the_backlog() -> None:
    buffer = LogBuffer()
    buffer.append("old")
    with buffer.reader(history=False) as reader:
        buffer.append("new")
        assert await reader.read() == (["new"], 0)


async def test_slow_reader_loses_lines_and_is_told_how_many() -> None:
    buffer = LogBuffer()
    with buffer.reader(history=False, max_pending=3) as reader:
        for n in range(10):
            buffer.append(str(n))
        assert await reader.read() == (["0", "1", "2"], 7)


async def test_closing_the_buffer_ends_waiting_readers() -> None:
    buffer = LogBuffer()
    reader = buffer.reader()
    ended = trio.Event()

    async def read() -> None:
        try:
            await reader.read()
        except trio.EndOfChannel:
            ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        buffer.close()
    assert ended.is_set()
