"""Pieces of process supervision on their own: line pumping and /proc parsing."""

from __future__ import annotations

import trio
import trio.testing

from llama_swap_trio.upstream.process import pump_lines
from llama_swap_trio.upstream.procfs import _parse_stat


async def pump(chunks: list[bytes], max_line: int = 16) -> list[str]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: pump_lines(receive, lines.append, max_line=max_line))
        for chunk in chunks:
            await send.send_all(chunk)
        await send.aclose()
    return lines


async def test_lines_split_across_chunks_are_joined() -> None:
    assert await pump([b"hel", b"lo\nwor", b"ld\r\n", b"tail"]) == ["hello", "world", "tail"]


async def test_overlong_line_is_cut_and_the_rest_skipped() -> None:
    # given a 5 MB line without newline, then a normal line
    big = [b"y" * 100_000] * 50
    lines = await pump([*big, b"\nnext\n"])
    # then memory stayed bounded: one cut line, then the next one
    assert lines == ["y" * 16 + " [truncated]", "next"]


async def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert await pump([b"caf\xe9\n"]) == ["caf\ufffd"]


def test_proc_stat_parsing_survives_parentheses_in_the_command_name() -> None:
    fields = " ".join(str(n) for n in range(4, 23))  # fields 4..22
    raw = f"123 (we ird) (name) S {fields} 0 0".encode()
    stat = _parse_stat(123, raw)
    assert stat is not None
    assert stat.state == "S"
    assert stat.pgrp == 5
    assert stat.start_time == 22
