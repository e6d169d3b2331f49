"""The request history (SPEC 6.2 ``GET /api/activity``): a bounded ring, optionally kept in SQLite.

:class:`Activity` is a bus listener: every ``request`` event (one per finished model-routed
request, whatever its end) goes into a ring of ``activity.max_entries``. ``recent`` answers
``/api/activity`` from it, newest first.

With ``activity.db`` the events are also written to a SQLite file (stdlib ``sqlite3``, WAL
journal), and the ring is filled from it at startup, so the history survives restarts. Writing
never blocks request handling: the listener only appends to a pending list; :meth:`Activity.run`
(a daemon task) takes what piled up, at most every :data:`FLUSH_SECONDS`, and writes it as one
transaction in a worker thread. The pending list is bounded too (:data:`MAX_PENDING`): if the disk
cannot keep up, the oldest unwritten events are dropped from the file (never from the ring), and
that is logged. The file keeps the newest ``max_entries`` rows: older ones are deleted as new
ones are written.

:func:`open_store` opens (or creates) the file and checks it; a file that cannot be opened, is
not a database, or is corrupt raises :class:`ActivityStoreError` naming the path, which the
daemon turns into a startup error.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import deque
from collections.abc import Iterable
from typing import Any

import trio

from llama_swap_trio.feed.bus import Event

log = logging.getLogger(__name__)

#: seconds between two writes of the pending events
FLUSH_SECONDS = 0.5
#: events waiting for the writer, at most
MAX_PENDING = 50_000
DEFAULT_LIMIT = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL,
    model TEXT,
    event TEXT NOT NULL
)
"""


class ActivityStoreError(Exception):
    """The activity database cannot be used (the message names the path)."""


class Store:
    """The SQLite file; used by one thread at a time (the writer's worker thread, or startup)."""

    def __init__(self, path: str, connection: sqlite3.Connection, keep: int) -> None:
        self.path = path
        self._db = connection
        self._keep = keep

    def load(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events, oldest first."""
        rows = self._db.execute(
            "SELECT event FROM requests ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        events = []
        for (text,) in reversed(rows):
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
        return events

    def write(self, events: Iterable[Event]) -> None:
        """Append ``events`` in one transaction and drop rows beyond the newest ``keep``."""
        rows = [
            (
                event.get("at"),
                event.get("model"),
                json.dumps({k: v for k, v in event.items() if k != "type"}, separators=(",", ":")),
            )
            for event in events
        ]
        with self._db:
            self._db.executemany("INSERT INTO requests (at, model, event) VALUES (?, ?, ?)", rows)
            self._db.execute(
                "DELETE FROM requests WHERE seq <= (SELECT MAX(seq) FROM requests) - ?",
                (self._keep,),
            )

    def close(self) -> None:
        self._db.close()


def open_store(path: str, keep: int) -> Store:
    """Open (or create) the activity database at ``path``.

    Raises:
        ActivityStoreError: it cannot be opened or created, is not a database, or is corrupt.
    """
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    except sqlite3.Error as error:
        raise ActivityStoreError(f"cannot open the activity database {path}: {error}") from None
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
        db.execute("PRAGMA synchronous=NORMAL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check[0] if check else '?'}")
        db.execute(_SCHEMA)
        db.commit()
        if mode is None or str(mode[0]).lower() != "wal":
            log.warning("activity database %s: WAL journal not available (%s)", path, mode)
    except sqlite3.Error as error:
        db.close()
        raise ActivityStoreError(f"cannot use the activity database {path}: {error}") from None
    return Store(path, db, keep)


class Activity:
    """The ring of finished requests (a bus listener) and, with a store, its writer.

    Args:
        max_entries: size of the ring (and rows kept in the store).
        store: the opened database, or None (memory only). Its newest rows fill the ring.
    """

    def __init__(self, max_entries: int, store: Store | None = None) -> None:
        self._ring: deque[Event] = deque(maxlen=max_entries)
        self._store = store
        self._pending: deque[Event] = deque(maxlen=MAX_PENDING)
        self._dropped = 0
        self._wakeup = trio.Event()
        if store is not None:
            self._ring.extend(store.load(max_entries))

    def on_event(self, event: Event) -> None:
        """The bus listener: keeps every ``request`` event."""
        if event.get("type") != "request":
            return
        # kept as published (events are never changed after it); ``type`` is left out on reading
        self._ring.append(event)
        if self._store is not None:
            if len(self._pending) == MAX_PENDING:
                self._dropped += 1
            self._pending.append(event)

    def recent(self, limit: int = DEFAULT_LIMIT, model: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` finished requests (of ``model`` when given), newest first."""
        found: list[dict[str, Any]] = []
        for record in reversed(self._ring):
            if len(found) >= limit:
                break
            if model is None or record.get("model") == model:
                found.append({key: value for key, value in record.items() if key != "type"})
        return found

    async def run(self) -> None:
        """Write pending events to the store every :data:`FLUSH_SECONDS` (until cancelled; the
        last batch is written on the way out, bounded). Returns at once without a store."""
        store = self._store
        if store is None:
            return
        try:
            while True:
                await trio.sleep(FLUSH_SECONDS)
                await self._flush(store)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._flush(store)
            store.close()

    async def _flush(self, store: Store) -> None:
        if self._dropped:
            log.warning(
                "activity database %s: %d request(s) not written (the disk is too slow)",
                store.path,
                self._dropped,
            )
            self._dropped = 0
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        try:
            await trio.to_thread.run_sync(store.write, batch)
        except sqlite3.Error as error:
            log.warning("activity database %s: writing failed: %s", store.path, error)
