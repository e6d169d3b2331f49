"""The health watchdog's keys (SPEC 6.4): ``health_interval`` and ``health_failures``.

Both are global, with a per-model override: ``health_interval`` (float seconds, 0 = off,
default 10) is the pause between two probes of a ready model's ``check_endpoint``;
``health_failures`` (int >= 1, default 3) how many failed probes in a row make it wedged.
"""

from __future__ import annotations

import math

from llama_swap_trio.config.problems import KeyPath, Problems

DEFAULT_INTERVAL = 10.0
DEFAULT_FAILURES = 3


def check_interval(problems: Problems, path: KeyPath, value: float | None) -> None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        problems.add(path, f"must be >= 0 (0 turns the health watchdog off), got {value}")


def check_failures(problems: Problems, path: KeyPath, value: int | None) -> None:
    if value is not None and value < 1:
        problems.add(path, f"must be >= 1, got {value}")


def resolve(own: float | int | None, default: float | int) -> float | int:
    """A model's value: its own, else the global one."""
    return default if own is None else own
