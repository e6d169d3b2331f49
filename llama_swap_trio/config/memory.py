"""The memory keys of the config (SPEC 6.7): sizes, ``[resources]``, ``memory``, ``sleep``.

``[resources] gpu_memory`` is the budget the models share; ``models.<id>.memory`` is a size or
``"measured"``; ``models.<id>.sleep`` names the two endpoints of a sleep mode (vLLM's
``POST /sleep?level=1`` and ``POST /wake_up``), and ``sleep_memory`` what a sleeping model still
holds. The schema types these keys loosely (a size is an int or a string); this module parses and
checks them with their key paths, so every problem is reported in the one validation pass.

Sizes: an int is bytes; a string is a number and a unit, ``"24GiB"``, ``"512MiB"``, ``"8GB"``,
``"1.5 GiB"``, ``"4096"`` (bytes). Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal
ones (KB, MB, GB, TB) powers of 1000, as the GPU vendors' and ``nvidia-smi``'s figures are MiB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import attrs

from llama_swap_trio.config.problems import KeyPath, Problems, describe_value

MEASURED = "measured"

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def parse_size(value: object) -> int:
    """Bytes of a size value: an int (bytes) or a string such as ``"24GiB"``.

    Raises:
        ValueError: the message says what is wrong and what is expected.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"must be a size >= 0, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(
            f'expected a size (int bytes or a string such as "24GiB"), got {describe_value(value)}'
        )
    found = _SIZE.match(value)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ValueError(
            f"not a size: {value!r} (use a number and one of B, KiB, MiB, GiB, TiB, KB, MB, GB, "
            'TB, e.g. "24GiB")'
        )
    return int(float(found.group(1)) * _UNITS[unit])


def format_size(size: int) -> str:
    """``25769803776`` -> ``24.0GiB``: a short, human figure for ``check`` and ``watch``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


@attrs.frozen
class Endpoint:
    """One HTTP call of a sleep mode: ``POST /sleep?level=1``."""

    method: str
    #: the path with its query, starting with ``/``
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@attrs.frozen
class SleepConfig:
    sleep: Endpoint
    wake: Endpoint


def parse_endpoint(text: str) -> Endpoint:
    """``"POST /sleep?level=1"`` -> :class:`Endpoint`. Raises ValueError."""
    parts = text.split()
    if len(parts) != 2 or parts[0].upper() not in _METHODS or not parts[1].startswith("/"):
        methods = ", ".join(_METHODS)
        raise ValueError(
            f"must be 'METHOD /path' (METHOD one of {methods}), e.g. 'POST /sleep?level=1', "
            f"got {text!r}"
        )
    return Endpoint(parts[0].upper(), parts[1])


@attrs.frozen
class ModelMemory:
    """The resolved memory keys of one model."""

    #: declared bytes, ``"measured"``, or None when the model has no ``memory``
    memory: int | str | None = None
    sleep: SleepConfig | None = None
    sleep_memory: int = 0


def _size_at(problems: Problems, path: KeyPath, value: object) -> int | None:
    try:
        return parse_size(value)
    except ValueError as exc:
        problems.add(path, str(exc))
        return None


def check_budget(problems: Problems, value: object) -> int | None:
    """``[resources] gpu_memory``: bytes, or None when unset (or wrong, then reported)."""
    if value is None:
        return None
    size = _size_at(problems, ("resources", "gpu_memory"), value)
    if size == 0:
        problems.add(("resources", "gpu_memory"), "must be > 0 (leave it out for no budget)")
        return None
    return size


def check_model(
    problems: Problems,
    model_id: str,
    memory: object,
    sleep: tuple[str, str] | None,
    sleep_memory: object,
    budget: int | None,
    nvml_error: Callable[[], str | None],
) -> ModelMemory:
    """One model's ``memory``, ``sleep`` and ``sleep_memory``, checked against the budget.

    Args:
        sleep: the raw ``sleep`` and ``wake`` strings, or None when ``sleep`` is unset.
        nvml_error: why NVML cannot be used (None when it can); asked only for ``"measured"``.
    """
    path: KeyPath = ("models", model_id)
    resolved: int | str | None = None
    if memory == MEASURED:
        why = nvml_error()
        if why is not None:
            problems.add(
                (*path, "memory"),
                f"'measured' needs NVML (an NVIDIA driver and nvidia-ml-py), which is not "
                f"available: {why}; declare a size instead",
            )
        else:
            resolved = MEASURED
    elif memory is not None:
        resolved = _size_at(problems, (*path, "memory"), memory)
        if resolved is not None and budget is not None and resolved > budget:
            problems.add(
                (*path, "memory"),
                f"{format_size(resolved)} is more than resources.gpu_memory "
                f"({format_size(budget)}): this model could never run",
            )
    asleep = _size_at(problems, (*path, "sleep_memory"), sleep_memory) or 0
    if isinstance(resolved, int) and asleep > resolved:
        problems.add(
            (*path, "sleep_memory"),
            f"{format_size(asleep)} is more than the model's memory ({format_size(resolved)})",
        )
    endpoints: SleepConfig | None = None
    if sleep is not None:
        parsed: list[Endpoint] = []
        for key, text in zip(("sleep", "wake"), sleep, strict=True):
            try:
                parsed.append(parse_endpoint(text))
            except ValueError as exc:
                problems.add((*path, "sleep", key), str(exc))
        if len(parsed) == 2:
            endpoints = SleepConfig(parsed[0], parsed[1])
    return ModelMemory(resolved, endpoints, asleep)


def fits_alone(memory: int | str | None, budget: int | None) -> bool:
    """Whether a model of ``memory`` can ever run within ``budget`` (a measured one always may:
    until measured it counts as the whole budget)."""
    return budget is None or not isinstance(memory, int) or memory <= budget


def memory_column(memory: int | str | None, budget: int | None) -> str:
    """What ``check`` prints for one model: ``memory=8.0GiB``, ``memory=measured``, ``-``."""
    if memory is None:
        shown = "-"
    elif isinstance(memory, str):
        shown = memory
    else:
        shown = format_size(memory)
    if budget is None:
        return f"memory={shown}"
    verdict = "fits" if fits_alone(memory, budget) else "NEVER FITS"
    return f"memory={shown} ({verdict})"


def budget_line(budget: int | None, models: Mapping[str, int | str | None]) -> str | None:
    """The ``check`` line for ``[resources]``: the budget and what is declared."""
    if budget is None:
        return None
    declared = sum(size for size in models.values() if isinstance(size, int))
    return (
        f"resources: gpu_memory={format_size(budget)} ({budget} bytes); "
        f"declared by the models together: {format_size(declared)}"
    )
