"""Reliability fixtures: the end-to-end daemon fixture, with the debug endpoint switched on."""

from __future__ import annotations

from tests.e2e.conftest import start_daemon

__all__ = ["start_daemon"]
