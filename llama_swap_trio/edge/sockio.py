"""Socket reads and writes for the relay's hot path: stdlib sockets and trio's I/O waits.

trio's ``SocketStream`` wraps every ``recv``/``send`` in a conflict detector, a try-then-wait
helper and two context managers, and tries each read before waiting for it, which costs a failing
``recv`` syscall whenever data has not arrived yet (nearly always, on a token stream). Profiled on
100 relayed streams, those layers were about half of the proxy's CPU per event. These two
functions do the same job directly on a non-blocking stdlib socket:

- :func:`receive` reads at once when bytes are there, else waits for readability (or waits first,
  when told the bytes are still to come): one ``recv`` per read. It is a trio checkpoint, as
  ``receive_some`` is.
- :func:`send_all` writes at once and waits only when the kernel's buffer is full. It is a
  checkpoint only when it has to wait: every loop that calls it here also receives, which is.

Only one task may read, and one write, a socket at a time (trio raises ``BusyResourceError`` for
two waiters, as for streams).
"""

from __future__ import annotations

import socket

import trio

#: bytes asked of a socket per read (client or upstream): large enough for a bulk relay, small
#: enough that the buffer recv() allocates comes from the heap (256 KiB went through mmap/munmap
#: on every read)
READ_SIZE = 64 * 1024

#: errors of a connection the peer closed or reset
NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


async def receive(sock: socket.socket, max_bytes: int, *, wait_first: bool = False) -> bytes:
    """The next bytes from ``sock`` (b"" at EOF), waiting until some arrive.

    Args:
        wait_first: wait for readability before trying to read. Right when the bytes are most
            likely still to come (the next event of a paced stream): it saves a ``recv`` that
            would fail. Else the read is tried first, and a success yields once, as trio does.

    Raises:
        OSError: the connection was reset (or the socket closed).
    """
    if not wait_first:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = sock.recv(max_bytes)
        except BlockingIOError:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()  # let others run (a bulk relay)
            return data
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(max_bytes)
        except BlockingIOError:
            continue  # a spurious wake-up: wait again


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data``.

    Raises:
        OSError: the connection was reset or closed by the peer (EPIPE, ECONNRESET).
    """
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)
    while sent < len(data):
        await trio.lowlevel.wait_writable(sock)
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            continue


def stdlib_socket(trio_socket: trio.socket.SocketType) -> socket.socket:
    """Take the descriptor of a trio socket into a non-blocking stdlib socket (the trio one is
    left detached: closing it does nothing)."""
    family, kind, proto = trio_socket.family, trio_socket.type, trio_socket.proto
    sock = socket.socket(family, kind, proto, fileno=trio_socket.detach())
    sock.setblocking(False)
    return sock
