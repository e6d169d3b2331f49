"""Bounded line buffers for the proxy log and each upstream's output, with lossy live readers.

A :class:`LogBuffer` keeps the last ``max_bytes`` of lines (the backlog for ``GET /logs``) and fans
new lines out to readers (``GET /logs/stream``). Writers never wait: a reader that falls more than
``max_pending`` lines behind loses lines and is told how many (``dropped`` on the next read).
"""

from __future__ import annotations

from collections import deque

import trio

DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_MAX_PENDING = 1000


class LogReader:
    def __init__(self, buffer: LogBuffer, backlog: list[str], max_pending: int) -> None:
        self._buffer = buffer
        self._pending: deque[str] = deque(backlog)
        self._max_pending = max_pending
        self._dropped = 0
        self._wakeup = trio.Event()
        self._closed = False

    def _offer(self, line: str) -> None:
        if len(self._pending) >= self._max_pending:
            self._dropped += 1
        else:
            self._pending.append(line)
        self._wakeup.set()

    async def read(self) -> tuple[list[str], int]:
        """Wait for lines; return ``(lines, dropped)`` where ``dropped`` counts lost lines.

        Raises:
            trio.EndOfChannel: the reader was closed and everything was read.
        """
        while not self._pending and not self._dropped:
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        lines = list(self._pending)
        self._pending.clear()
        dropped, self._dropped = self._dropped, 0
        return lines, dropped

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._buffer._readers.discard(self)

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LogBuffer:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self._size = 0
        self._readers: set[LogReader] = set()

    def append(self, line: str) -> None:
        """Add one line (without its newline). Never blocks."""
        self._lines.append(line)
        self._size += len(line) + 1
        while self._size > self._max_bytes and len(self._lines) > 1:
            self._size -= len(self._lines.popleft()) + 1
        for reader in list(self._readers):
            reader._offer(line)

    def lines(self) -> list[str]:
        return list(self._lines)

    def tail(self, max_bytes: int = 2048) -> str:
        """The last lines, at most ``max_bytes`` long in all (for error messages)."""
        picked: list[str] = []
        size = 0
        for line in reversed(self._lines):
            size += len(line) + 1
            if size > max_bytes:
                break
            picked.append(line)
        return "\n".join(reversed(picked))

    def reader(self, *, history: bool = True, max_pending: int = DEFAULT_MAX_PENDING) -> LogReader:
        reader = LogReader(self, self.lines() if history else [], max_pending)
        self._readers.add(reader)
        return reader

    def close(self) -> None:
        for reader in list(self._readers):
            reader.close()
