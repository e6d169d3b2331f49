"""The persistent JSON helper (http/json_helper.py), with real helper processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from llama_swap_trio import errors
from llama_swap_trio.http import json_helper
from llama_swap_trio.http.body_buffer import Assembler
from llama_swap_trio.http.json_helper import helper

BODY = b'{"model": "q", "stream": true, "x": [' + b"{}," * 700_000 + b"{}]}"  # ~2 MB
#: a helper that reads its request and never answers
SILENT = [sys.executable, "-c", "import sys, time; sys.stdin.buffer.read(13); time.sleep(600)"]


def test_the_assembler_gives_the_body_its_pieces_make() -> None:
    data = bytes(range(256)) * 8000  # 2 MB, assembled in place
    for announced in (len(data), len(data) + 10, len(data) - 10, 0):
        parts = Assembler(announced)
        for offset in range(0, len(data), 65536):
            parts.add(data[offset : offset + 65536])
        assert parts.result() == data


async def test_one_helper_reads_every_heavy_body() -> None:
    first = await helper().call(b"s", b"", BODY)
    pid = helper().pid
    second = await helper().call(b"s", b"", BODY)
    assert first == second
    assert first[0] == 0
    assert b'"model": "q"' in first[1]
    assert helper().pid == pid
    assert helper().started == 1


async def test_a_killed_helper_is_replaced_and_the_body_still_read() -> None:
    await helper().call(b"s", b"", BODY)
    old = helper().pid
    assert old is not None
    os.kill(old, 9)
    status, payload = await helper().call(b"s", b"", BODY)
    assert status == 0
    assert b'"stream": true' in payload
    assert helper().pid not in (None, old)
    assert helper().started == 2


async def test_a_silent_helper_is_killed_and_the_request_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(json_helper, "COMMAND", SILENT)
    monkeypatch.setattr(json_helper, "deadline", lambda size: 0.5)
    with trio.fail_after(30), pytest.raises(errors.ProxyError) as refused:
        await helper().call(b"s", b"", BODY)
    assert (refused.value.status, refused.value.code) == (503, "json_helper_failed")
    assert helper().pid is None  # killed, not reused


async def test_a_full_line_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_helper, "COMMAND", SILENT)
    monkeypatch.setattr(json_helper, "MAX_QUEUE", 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(helper().call, b"s", b"", BODY)
        with trio.fail_after(30):
            while helper().pid is None:  # the first body is with the helper
                await trio.sleep(0.01)
        with pytest.raises(errors.ProxyError) as refused:
            await helper().call(b"s", b"", b"{}")
        nursery.cancel_scope.cancel()  # the client of the first one leaves
    assert (refused.value.status, refused.value.code) == (503, "server_busy")
    assert refused.value.headers == (("retry-after", "1"),)
    assert helper().pid is None  # cancelled mid-message: the helper was killed


async def test_a_helper_that_cannot_start_fails_the_request_cleanly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(json_helper, "COMMAND", [f"{tmp_path}/no-such-program"])
    with pytest.raises(errors.ProxyError) as refused:
        await helper().call(b"s", b"", BODY)
    assert (refused.value.status, refused.value.code) == (503, "json_helper_failed")
    assert "could not be started" in refused.value.message
