"""Assembling a large body from its pieces without one long copy on the event loop.

A body arrives in pieces of up to 64 KiB. Joining them at the end (``b"".join``) is one copy of
the whole body in one step of the event loop, and freeing the pieces right after is another long
step: measured on the shared 2-core machine, 17 ms + 15 ms for a 100 MB body, which with page
faults under load made the longest pause of a ``/health`` probe while a 100 MB JSON body was read
(47 ms, see benchmarks/RESULTS.md "Big JSON bodies"). It also holds the body twice at the peak.

:class:`Assembler` copies each piece, as it arrives, into one ``bytes`` object of the size known
in advance (a ``Content-Length``, or the length a helper announced), so the copy is spread over
the steps that receive the pieces and each piece is freed at once. The object is made with
``PyBytes_FromStringAndSize(NULL, size)``, CPython's documented way to create a bytes object the
caller fills before anyone else sees it; nothing else holds a reference until :meth:`result`.
Elsewhere than CPython, or when the pieces do not add up to the size, it joins them as before.
The body stays ``bytes`` everywhere it goes (routing, rewriting, forwarding).
"""

from __future__ import annotations

import ctypes
import sys

#: below this size a join is a few microseconds: pieces are kept and joined
MIN_SIZE = 1024 * 1024

_CPYTHON = sys.implementation.name == "cpython"
if _CPYTHON:
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _new_bytes.restype = ctypes.py_object
    _bytes_address = ctypes.pythonapi.PyBytes_AsString
    _bytes_address.argtypes = (ctypes.py_object,)
    _bytes_address.restype = ctypes.c_void_p


class Assembler:
    """The pieces of a body of ``size`` bytes, put together as they come.

    ``add`` the pieces in order, then take :meth:`result` once. Fewer or more bytes than ``size``
    are still assembled correctly (by a join), only without the saving.
    """

    def __init__(self, size: int) -> None:
        self._pieces: list[bytes] = []
        self._filled = 0
        self._size = size
        self._target: bytes | None = None
        self._address = 0
        if _CPYTHON and size >= MIN_SIZE:
            self._target = _new_bytes(None, size)
            self._address = _bytes_address(self._target) or 0
            if not self._address:  # never for a bytes object; but never write to address 0
                self._target = None

    def add(self, piece: bytes) -> None:
        """Append ``piece`` (copied now when the body is assembled in place)."""
        if not piece:
            return
        end = self._filled + len(piece)
        if self._target is not None and not self._pieces and end <= self._size:
            ctypes.memmove(self._address + self._filled, piece, len(piece))
        else:
            if self._target is not None and not self._pieces:  # more than announced: join
                self._pieces.append(self._target[: self._filled])
                self._target = None
            self._pieces.append(piece)
        self._filled = end

    def __len__(self) -> int:
        return self._filled

    def result(self) -> bytes:
        """The whole body."""
        target, self._target = self._target, None
        if target is not None:
            if self._filled == self._size:
                return target
            return target[: self._filled]  # the sender stopped short (the caller decides)
        pieces, self._pieces = self._pieces, []
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)
