from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from llama_swap_trio.upstream import procfs


@pytest.fixture
def kill_groups() -> Iterator[list[int]]:
    """Process groups a test started outside an Upstream: SIGKILLed at the end, whatever happens."""
    pgids: list[int] = []
    yield pgids
    for pgid in pgids:
        if procfs.group_members(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
