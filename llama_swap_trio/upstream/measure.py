"""``memory = "measured"``: read a model's GPU memory through NVML and keep the largest figure.

A model's footprint is only known once it runs: llama-server allocates its KV cache at start, and
some servers grow their buffers with the first requests. So the :class:`Measurer` reads the GPU
memory of every process in the model's process group (the server and anything it forked) when the
model becomes ready and then every :data:`INTERVAL` seconds for :data:`AFTER_READY` seconds, and
again for :data:`AFTER_REQUEST` seconds after each request ends. It keeps the maximum.

The figures live in a small JSON file next to the daemon's state file (the state directory), keyed
by model id and resolved command, so a restart of the daemon knows them at once and a changed
command (another quantisation, another context size) is measured afresh. Until a model has a
figure, the memory rule counts it as the whole budget (routing/memory.py), so it runs alone.

The measurer follows the event bus (``model_state`` and ``request`` events) instead of hooks in the
router or the upstream: it only ever reads. NVML calls run in a worker thread, as a driver may
take milliseconds to answer.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from llama_swap_trio.config.memory import MEASURED, format_size
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.upstream.nvml import GpuMemory, GpuUnavailable
from llama_swap_trio.upstream.procfs import group_members

log = logging.getLogger(__name__)

#: seconds between two readings while a model is watched
INTERVAL = 1.0
#: seconds a model is watched after it became ready, and after each of its requests ended
AFTER_READY = 30.0
AFTER_REQUEST = 10.0


def measurements_path(state_file: Path) -> Path:
    """Where the figures live: beside the state file (``….state.json`` -> ``….memory.json``)."""
    name = state_file.name.removesuffix(".state.json")
    return state_file.with_name(name + ".memory.json")


class MeasuredStore:
    """The largest GPU memory seen per model (``routing.memory.Measured``), kept in a file."""

    def __init__(self, path: Path | None, models: Mapping[str, ModelConfig]) -> None:
        self._path: Path | None = None
        self._cmds: dict[str, str] = {}
        self._figures: dict[str, dict[str, object]] = {}
        self.configure(models, path)

    def configure(self, models: Mapping[str, ModelConfig], path: Path | None) -> None:
        """Measure ``models`` from now on (a reload); the file is read once it is first needed."""
        self._cmds = {m.id: m.cmd for m in models.values() if m.memory == MEASURED}
        if path is not None and self._path is None:
            self._path = path
            self._figures = {**self._read(path), **self._figures}

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable memory measurements %s: %s", path, exc)
            return {}
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            return {}
        return {k: v for k, v in models.items() if isinstance(v, dict)}

    def measured(self, model: str) -> int | None:
        """Bytes measured for ``model`` with its current command, or None."""
        entry = self._figures.get(model)
        if entry is None or entry.get("cmd") != self._cmds.get(model):
            return None
        value = entry.get("bytes")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def record(self, model: str, size: int) -> bool:
        """Keep ``size`` if it is the largest yet; True when the figure grew (and was saved)."""
        known = self.measured(model)
        if known is not None and size <= known:
            return False
        self._figures[model] = {"bytes": size, "cmd": self._cmds.get(model, "")}
        self._save()
        return True

    def _save(self) -> None:
        if self._path is None:
            return
        data = {"version": 1, "models": self._figures}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=self._path.name + ".", suffix=".tmp", dir=self._path.parent
            )
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self._path)
        except OSError as exc:
            # a figure that is not saved is measured again after a restart; no reason to fail
            log.warning("cannot save memory measurements to %s: %s", self._path, exc)


class Measurer:
    """Watches ``"measured"`` models and records their GPU memory (see the module docstring).

    Args:
        pid_of: the pid (= process group) of a model's running process, or None.
        members: the live pids of a process group (procfs by default; tests pass their own).
        in_thread: read NVML in a worker thread (off for a fake GPU under a test clock).
    """

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        store: MeasuredStore,
        gpu: GpuMemory,
        pid_of: Callable[[str], int | None],
        *,
        members: Callable[[int], list[int]] = group_members,
        in_thread: bool = True,
    ) -> None:
        self._watched: frozenset[str] = frozenset()
        self.configure(models)
        self._store = store
        self._gpu = gpu
        self._pid_of = pid_of
        self._members = members
        self._in_thread = in_thread
        #: model -> trio time until which it is watched
        self._until: dict[str, float] = {}
        self._nursery: trio.Nursery | None = None

    def configure(self, models: Mapping[str, ModelConfig]) -> None:
        """Watch the ``"measured"`` models of ``models`` from now on (a reload)."""
        self._watched = frozenset(m.id for m in models.values() if m.memory == MEASURED)

    async def run(self, bus: EventBus) -> None:
        """Follow the bus until cancelled."""
        with bus.subscribe() as events:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async for event in events:
                    model = event.get("model")
                    if model not in self._watched:
                        continue
                    if event.get("type") == "model_state" and event.get("state") == "ready":
                        self.watch(str(model), AFTER_READY)
                    elif event.get("type") == "request":
                        self.watch(str(model), AFTER_REQUEST)

    def watch(self, model: str, seconds: float) -> None:
        """Read ``model`` now and every :data:`INTERVAL` for ``seconds`` (extending a watch)."""
        until = trio.current_time() + seconds
        running = model in self._until
        self._until[model] = max(until, self._until.get(model, until))
        if not running and self._nursery is not None:
            self._nursery.start_soon(self._watch, model)

    async def _watch(self, model: str) -> None:
        try:
            while trio.current_time() <= self._until[model]:
                pid = self._pid_of(model)
                if pid is None:
                    return  # stopped: the next ready starts a new watch
                await self.read(model, pid)
                await trio.sleep(INTERVAL)
        finally:
            del self._until[model]

    async def read(self, model: str, pid: int) -> int | None:
        """One reading of ``model``'s process group; the bytes, or None when NVML failed."""
        pids = self._members(pid) or [pid]
        try:
            if self._in_thread:
                used = await trio.to_thread.run_sync(self._gpu.process_memory, pids)
            else:
                used = self._gpu.process_memory(pids)
        except GpuUnavailable as exc:
            log.warning("[%s] cannot read GPU memory: %s", model, exc)
            return None
        if used and self._store.record(model, used):
            log.info("[%s] measured GPU memory: %s", model, format_size(used))
        return used


class Measuring:
    """The figures of a daemon's ``"measured"`` models and the measurer that takes them, across
    reloads: :meth:`configure` follows each configuration (new or changed commands, models that
    became ``"measured"``). The measurer task runs only while some model is ``"measured"`` and
    NVML answers, so a daemon without them has no extra bus subscriber."""

    def __init__(
        self,
        nursery: trio.Nursery,
        config_path: str,
        pid_of: Callable[[str], int | None],
        bus: EventBus,
    ) -> None:
        from llama_swap_trio.upstream.statefile import state_file_path

        self._nursery = nursery
        self._pid_of = pid_of
        self._bus = bus
        self._path = measurements_path(state_file_path(config_path))
        self.store: MeasuredStore | None = None
        self._measurer: Measurer | None = None

    def configure(self, models: Mapping[str, ModelConfig]) -> MeasuredStore:
        """Follow ``models``; the store the memory rule reads (the same object every time)."""
        from llama_swap_trio.upstream import nvml

        wanted = any(m.memory == MEASURED for m in models.values())
        if self.store is None:
            self.store = MeasuredStore(self._path if wanted else None, models)
        else:
            self.store.configure(models, self._path if wanted else None)
        if self._measurer is not None:
            self._measurer.configure(models)
        elif wanted and (gpu := nvml.system_gpu()) is not None:
            self._measurer = Measurer(models, self.store, gpu, self._pid_of)
            self._nursery.start_soon(self._measurer.run, self._bus)
        return self.store
