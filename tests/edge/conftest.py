"""Fixtures of the edge's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record the package logs during the test (its logger may not propagate)."""
    logger = logging.getLogger("llama_swap_trio")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
