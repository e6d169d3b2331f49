"""GPU memory through NVML (``nvidia-ml-py``), behind a small interface with a fake for tests.

The daemon needs two figures from the driver: the GPU memory each process uses (summed over the
devices, for ``memory = "measured"``) and the devices' total (shown next to the budget). The
library is imported only when a config asks for ``"measured"``: most machines running this have
no NVIDIA driver, and importing ``pynvml`` there costs time for nothing.

:func:`unavailable_reason` answers "can NVML be used here?" once per process, with the library's
own init error (``NVML Shared Library Not Found``, ``Driver Not Loaded``...), which the config
check quotes. :class:`FakeGpu` is what tests (and a machine without a GPU) stand in for it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)


class GpuUnavailable(Exception):
    """NVML cannot be used: no library, no driver, no device, or a call failed."""


class GpuMemory(Protocol):
    """What the daemon reads from the GPU driver."""

    def process_memory(self, pids: Iterable[int]) -> int:
        """Bytes of GPU memory used by the processes ``pids`` together, over every device.

        Raises:
            GpuUnavailable: the driver did not answer.
        """
        ...

    def total(self) -> int:
        """Bytes of GPU memory of every device together."""
        ...


class NvmlGpu:
    """The real driver, through ``pynvml`` (``nvidia-ml-py``). Create with :func:`open_gpu`."""

    def __init__(self, pynvml: Any) -> None:
        self._nvml = pynvml
        self._handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]

    def process_memory(self, pids: Iterable[int]) -> int:
        wanted = set(pids)
        used = 0
        try:
            for handle in self._handles:
                for getter in (
                    self._nvml.nvmlDeviceGetComputeRunningProcesses,
                    self._nvml.nvmlDeviceGetGraphicsRunningProcesses,
                ):
                    for proc in getter(handle):
                        # usedGpuMemory is None where the driver cannot tell (Windows WDDM)
                        if proc.pid in wanted and proc.usedGpuMemory:
                            used += int(proc.usedGpuMemory)
        except self._nvml.NVMLError as exc:
            raise GpuUnavailable(str(exc)) from exc
        return used

    def total(self) -> int:
        try:
            return sum(int(self._nvml.nvmlDeviceGetMemoryInfo(h).total) for h in self._handles)
        except self._nvml.NVMLError as exc:
            raise GpuUnavailable(str(exc)) from exc


def open_gpu() -> NvmlGpu:
    """Initialise NVML and return the driver's view.

    Raises:
        GpuUnavailable: with the reason (the package is missing, or ``nvmlInit`` failed).
    """
    try:
        import pynvml  # type: ignore[import-untyped]  # late on purpose: see the docstring
    except ImportError as exc:
        raise GpuUnavailable(f"the nvidia-ml-py package is not installed ({exc})") from exc
    try:
        pynvml.nvmlInit()
        return NvmlGpu(pynvml)
    except pynvml.NVMLError as exc:
        raise GpuUnavailable(f"NVML init failed: {exc}") from exc


@functools.cache
def _probe() -> tuple[NvmlGpu | None, str | None]:
    try:
        return open_gpu(), None
    except GpuUnavailable as exc:
        return None, str(exc)


def unavailable_reason() -> str | None:
    """Why NVML cannot be used in this process, or None when it can (asked once, then kept)."""
    return _probe()[1]


def system_gpu() -> GpuMemory | None:
    """The driver's view, or None without NVML (asked once, then kept)."""
    return _probe()[0]


class FakeGpu:
    """A GPU for tests: ``usage`` maps pid -> bytes; tests change it as "processes" grow."""

    def __init__(self, usage: Mapping[int, int] | None = None, total: int = 0) -> None:
        self.usage: dict[int, int] = dict(usage or {})
        self._total = total
        self.calls = 0
        #: set to make the next reads fail, as a driver that went away would
        self.broken = False

    def process_memory(self, pids: Iterable[int]) -> int:
        self.calls += 1
        if self.broken:
            raise GpuUnavailable("fake GPU is broken")
        return sum(self.usage.get(pid, 0) for pid in set(pids))

    def total(self) -> int:
        return self._total
