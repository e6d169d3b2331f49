"""The relay hub: one task moves every streamed response body, with no task switch per event.

Measured on 100 paced SSE streams (benchmarks/RESULTS.md), a bare trio relay (one task per stream:
wait for the upstream, read, write to the client) costs about 50 us of CPU per event on this
machine, two thirds of it trio waking the task: the epoll re-arm, the reschedule, the resume. The
proxy's budget is 60 us per event, parsing and accounting included. The hub keeps the upstream
sockets of the responses it relays in its own epoll set (registered once per response) and, each
time it wakes, serves every socket that has bytes: read, remove the upstream's framing, add the
client's, write, account. A wake-up is shared by all the events that arrived meanwhile.

It stays structured: a relay belongs to the request task that started it (through the front
door's ``Edge.relay``, edge/server.py), which waits for it to finish and, on the way out (done,
cancelled, client gone), takes it out of the hub synchronously before closing the upstream
connection. The hub task lives in the server's nursery.

Nothing blocks: writes are non-blocking. When a client's socket is full, the hub stops reading
that upstream (its epoll interest is cleared) and waits for the client socket to be writable, so
a slow client holds at most one read's worth of bytes here and the upstream feels the backpressure
through TCP, as it does through a task that waits in ``send_all``.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable

import trio

from llama_swap_trio.edge import sockio
from llama_swap_trio.edge.wire import BodyReader, ProtocolError

log = logging.getLogger(__name__)

READ_SIZE = sockio.READ_SIZE
#: reads of one upstream per wake-up of the hub, at most (fairness between bulk relays)
MAX_READS_PER_WAKE = 16

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT

#: how a relay ended
DONE = "done"
UPSTREAM_FAILED = "upstream_failed"
CLIENT_GONE = "client_gone"

Frame = Callable[[bytes, bool], bytes]


def _ignore(piece: bytes) -> None:
    pass


class Relay:
    """One response body being relayed; created by :meth:`RelayHub.start`.

    Attributes:
        finished: set when the relay ended; :attr:`outcome` says how.
    """

    __slots__ = (
        "_client",
        "_client_fd",
        "_frame",
        "_hub",
        "_on_data",
        "_pending",
        "_reader",
        "_upstream",
        "finished",
        "outcome",
    )

    def __init__(
        self,
        hub: RelayHub,
        upstream: socket.socket,
        reader: BodyReader,
        client: socket.socket,
        frame: Frame,
        on_data: Callable[[bytes], None],
    ) -> None:
        self._hub = hub
        self._upstream = upstream
        self._reader = reader
        self._client = client
        self._client_fd = client.fileno()
        self._frame = frame
        self._on_data = on_data
        #: framed bytes the client's socket has not taken yet
        self._pending = b""
        self.finished = trio.Event()
        self.outcome: str | None = None

    def pass_on(self, pieces: list[bytes]) -> None:
        """Frame and write body ``pieces`` (the end of the body when the reader is done), then
        account for them: accounting never delays a token, and never breaks the stream."""
        done = self._reader.done
        if not pieces and not done:
            return
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._write(self._frame(body, not done))
        if done and not self._pending:
            self._finish(DONE)
        try:
            for piece in pieces:
                self._on_data(piece)
        except Exception:
            log.exception("accounting for a relayed body failed; the body goes on unaccounted")
            self._on_data = _ignore

    def on_upstream_readable(self) -> None:
        """Read what the upstream sent and pass it on. A full read means more is waiting (a
        bulk body): read on, a bounded number of times, while the client keeps up; a short one
        (a paced event) is all there is, and another read would only fail."""
        for _ in range(MAX_READS_PER_WAKE):
            try:
                data = self._upstream.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("upstream broke off its response: %s", exc)
                self._finish(UPSTREAM_FAILED)
                return
            try:
                if data:
                    pieces = self._reader.feed(data)
                else:
                    self._reader.eof()
                    pieces = []
            except ProtocolError as exc:
                log.warning("upstream broke off its response: %s", exc)
                self._finish(UPSTREAM_FAILED)
                return
            self.pass_on(pieces)
            if len(data) < READ_SIZE or self.outcome is not None or self._pending:
                return

    def on_client_writable(self) -> None:
        data, self._pending = self._pending, b""
        self._write(data)
        if not self._pending:
            self._hub._resume(self)
            if self._reader.done:
                self._finish(DONE)

    def _write(self, data: bytes) -> None:
        if self.outcome is not None or not data:
            return
        if self._pending:
            self._pending += data
            return
        try:
            sent = self._client.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._finish(CLIENT_GONE)
            return
        if sent < len(data):
            self._pending = data[sent:]
            self._hub._pause(self)

    def _finish(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._hub.stop(self)
            self.finished.set()


class RelayHub:
    """The hub; run :meth:`run` in a nursery, then :meth:`start` relays from request tasks."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._relays: dict[int, Relay] = {}  # by the fd the hub waits on for it
        self._paused: set[Relay] = set()

    async def run(self) -> None:
        """Serve the relays until cancelled; then every relay still here ends (client gone)."""
        epoll = self._epoll
        relays = self._relays
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0):
                    relay = relays.get(fd)
                    if relay is None:
                        continue
                    try:
                        if fd == relay._client_fd:
                            relay.on_client_writable()
                        else:
                            relay.on_upstream_readable()
                    except Exception:
                        # A bug or a hostile body in one relay must not end every other one.
                        log.exception("relaying a response body failed")
                        relay._finish(UPSTREAM_FAILED)
        finally:
            for relay in list(relays.values()):
                relay._finish(CLIENT_GONE)
            epoll.close()

    def start(
        self,
        upstream: socket.socket,
        reader: BodyReader,
        ready: list[bytes],
        client: socket.socket,
        frame: Frame,
        on_data: Callable[[bytes], None],
    ) -> Relay:
        """Relay the rest of a body: ``ready`` (already read) first, then what ``upstream`` sends.

        Args:
            upstream: the upstream connection's socket (non-blocking); nobody else reads it
                until the relay ends.
            reader: the body's framing state.
            client: the client's socket (non-blocking); nobody else writes it meanwhile.
            frame: turns body bytes (and whether more follow) into the bytes to write.
            on_data: called with every piece of body relayed (accounting).
        """
        relay = Relay(self, upstream, reader, client, frame, on_data)
        try:
            relay.pass_on(ready)
        except Exception:
            log.exception("relaying a response body failed")
            relay._finish(UPSTREAM_FAILED)
        if relay.outcome is None and relay not in self._paused:
            self._watch(upstream.fileno(), relay, _IN)
        return relay

    def stop(self, relay: Relay) -> None:
        """Take ``relay`` out of the hub (idempotent; synchronous, for any ``finally``)."""
        self._paused.discard(relay)
        for fd in (relay._upstream.fileno(), relay._client.fileno()):
            if self._relays.get(fd) is relay:
                self._unwatch(fd)

    def _watch(self, fd: int, relay: Relay, events: int) -> None:
        self._relays[fd] = relay
        self._epoll.register(fd, events)

    def _unwatch(self, fd: int) -> None:
        del self._relays[fd]
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass  # already closed: the kernel dropped it from the set

    def _pause(self, relay: Relay) -> None:
        """The client's socket is full: wait for it to take bytes, and read nothing meanwhile
        (the upstream leaves the set entirely: a hang-up is reported even with no interest)."""
        if relay in self._paused:
            return
        self._paused.add(relay)
        up = relay._upstream.fileno()
        if self._relays.get(up) is relay:
            self._unwatch(up)
        self._watch(relay._client.fileno(), relay, _OUT)

    def _resume(self, relay: Relay) -> None:
        """The client took the bytes: read the upstream again."""
        if relay not in self._paused:
            return
        self._paused.discard(relay)
        self._unwatch(relay._client.fileno())
        if not relay._reader.done:
            self._watch(relay._upstream.fileno(), relay, _IN)
