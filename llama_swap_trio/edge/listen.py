"""Binding the listen address: ``HOST:PORT``, or every interface for ``:PORT`` (SPEC 6.1).

``trio.open_tcp_listeners(port, host=None)`` binds every interface with one socket per address
family, each ``IPV6_V6ONLY``; with port 0 the two sockets even get different ports. Every
interface here is one dual-stack socket instead: ``[::]:PORT`` with ``IPV6_V6ONLY`` off, which
takes IPv4 connections too (as ``::ffff:a.b.c.d``), so there is one port and one URL. A host
without IPv6 gets ``0.0.0.0:PORT``.
"""

from __future__ import annotations

import errno
import socket

import trio

#: the ``--listen`` host that means every interface (``--listen :8080``)
EVERY_INTERFACE = ""


async def open_listeners(host: str, port: int, backlog: int) -> list[trio.SocketListener]:
    """Listening sockets for ``host:port`` (``host`` may be :data:`EVERY_INTERFACE`).

    Raises:
        OSError: the address cannot be bound (e.g. ``EADDRINUSE``).
    """
    if host != EVERY_INTERFACE:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    return [_every_interface(port, backlog)]


#: errors that mean "no IPv6 here" (not compiled in, disabled, no address): use IPv4 alone
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


def _every_interface(port: int, backlog: int) -> trio.SocketListener:
    try:
        sock = _bound(socket.AF_INET6, ("::", port), backlog)
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        sock = _bound(socket.AF_INET, ("0.0.0.0", port), backlog)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def _bound(family: socket.AddressFamily, address: tuple[str, int], backlog: int) -> socket.socket:
    """A non-blocking listening socket of ``family`` bound to ``address``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        # as trio does: a restarted daemon may bind while old connections are in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
