"""The daemon's side of the persistent JSON helper process (:mod:`.json_worker`).

Heavy bodies (:mod:`.heavy_body`) are read in another process because parsing holds the GIL.
Spawning that process per body cost 0.1-0.2 s per request on the loaded machine, so one helper is
started on the first heavy body and reused:

- **One at a time, bounded queue.** The helper reads one body at a time (it is one more process
  on a machine whose cores also run the models); requests wait their turn in order, and when
  :data:`MAX_QUEUE` are already in (the one being read included), the next gets 503
  ``server_busy`` with ``Retry-After`` at once.
- **Never stuck.** Each answer must come within :func:`deadline` (30 s plus 1 s per MB): a helper
  that takes longer is killed and the request gets 503 ``json_helper_failed``. A request
  cancelled while its body is with the helper (the client left) kills the helper too, since the
  pipe is then mid-message; the next heavy body starts a fresh one.
- **Replaced when it dies.** A helper found dead (killed, crashed) is replaced; a request whose
  helper died under it is tried once more on a fresh helper, and gets 503
  ``json_helper_failed`` if that one dies too (a body that kills the helper is not retried
  forever).
- **Never outlives the daemon.** The helper exits when its stdin reaches EOF, which happens when
  the daemon closes the pipe or dies in any way (even SIGKILL: the kernel closes its fds). A
  trio system task also kills and reaps it when the daemon's trio run ends.

The helper is per trio run (a :class:`trio.lowlevel.RunVar`), so every test's run has its own.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import trio

from llama_swap_trio import errors
from llama_swap_trio.http.body_buffer import Assembler

log = logging.getLogger(__name__)

COMMAND = [sys.executable, "-m", "llama_swap_trio.http.json_worker"]
#: requests in the helper's line at once (the one being read included); more get 503
MAX_QUEUE = 8
#: bytes per write of a body into the helper's pipe
WRITE_SIZE = 1024 * 1024
_HEAD_SIZE = 13


def deadline(size: int) -> float:
    """Seconds the helper may take on a body of ``size`` bytes (msgspec reads ~60 MB/s of the
    worst JSON on the loaded machine; ``json.loads``, the fallback, ~10 MB/s)."""
    return 30.0 + size / 1_000_000


class HelperFailed(Exception):
    """The helper died or went silent while reading a body."""


def busy() -> errors.ProxyError:
    return errors.ProxyError(
        503,
        "server_error",
        "server_busy",
        f"{MAX_QUEUE} large JSON bodies are already being read; retry shortly",
        (("retry-after", "1"),),
    )


def failed(why: str) -> errors.ProxyError:
    return errors.ProxyError(
        503,
        "server_error",
        "json_helper_failed",
        f"the helper process reading large JSON bodies failed on this body: {why}",
    )


class JsonHelper:
    """One helper process, started on demand, used by one request at a time."""

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self._in_line = 0
        self._process: trio.Process | None = None
        self._rest = bytearray()
        #: helpers started so far (the log line names each one's pid)
        self.started = 0

    @property
    def pid(self) -> int | None:
        """The running helper's pid, if one runs."""
        return self._process.pid if self._process is not None else None

    async def call(self, mode: bytes, instructions: bytes, body: bytes) -> tuple[int, bytes]:
        """The helper's status and payload for ``body`` (see :mod:`.json_worker`).

        Raises:
            ProxyError: 503 ``server_busy`` (the line is full) or ``json_helper_failed``.
        """
        if self._in_line >= MAX_QUEUE:
            raise busy()
        self._in_line += 1
        try:
            async with self._lock:
                try:
                    return await self._exchange(mode, instructions, body)
                except HelperFailed:  # maybe killed while idle: once more on a fresh one
                    log.info("the JSON helper died; trying the body once more on a new one")
                try:
                    return await self._exchange(mode, instructions, body)
                except HelperFailed as failure:
                    raise failed(str(failure)) from None
        finally:
            self._in_line -= 1

    async def _exchange(self, mode: bytes, instructions: bytes, body: bytes) -> tuple[int, bytes]:
        process = await self._running()
        assert process.stdin is not None
        assert process.stdout is not None
        done = False
        try:
            with trio.move_on_after(deadline(len(body))):
                head = mode + len(instructions).to_bytes(4, "big") + len(body).to_bytes(8, "big")
                await process.stdin.send_all(head + instructions)
                view = memoryview(body)
                for offset in range(0, len(body), WRITE_SIZE):
                    # a slice of the body per write: the loop runs between them
                    await process.stdin.send_all(view[offset : offset + WRITE_SIZE])
                reply = await self._receive(process.stdout, 9)
                payload = await self._receive(process.stdout, int.from_bytes(reply[1:], "big"))
                done = True
                return reply[0], payload
            raise failed(f"no answer within {deadline(len(body)):.0f} s")  # not retried
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
            raise HelperFailed(f"it exited ({process.poll()})") from None
        finally:
            if not done:  # dead, silent, or mid-message after a cancel: never reused
                await self._stop()

    async def _receive(self, stream: trio.abc.ReceiveStream, size: int) -> bytes:
        """Exactly ``size`` bytes from the helper (a large payload assembled in place)."""
        out = Assembler(size)
        if self._rest:
            out.add(bytes(self._rest[:size]))
            del self._rest[:size]
        while len(out) < size:
            data = await stream.receive_some(WRITE_SIZE)
            if not data:
                raise EOFError
            need = size - len(out)
            out.add(bytes(data[:need]) if len(data) > need else bytes(data))
            if len(data) > need:
                self._rest += data[need:]
        return out.result()

    async def _running(self) -> trio.Process:
        process = self._process
        if process is not None and process.poll() is None:
            return process
        if process is not None:
            log.info(
                "the JSON helper (pid %d) exited with %s; starting a new one",
                process.pid,
                process.returncode,
            )
            await self._stop()
        try:
            process = await trio.lowlevel.open_process(
                COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as error:  # e.g. out of file descriptors: this request fails, cleanly
            raise failed(f"it could not be started ({error})") from None
        self._process = process
        self._rest.clear()
        self.started += 1
        log.debug("JSON helper started (pid %d)", process.pid)
        return process

    async def _stop(self) -> None:
        """Kill and reap the helper (at once: it holds nothing worth a graceful stop)."""
        process, self._process = self._process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.kill()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()
            await process.wait()

    async def guard(self) -> None:
        """A system task: when the trio run ends, the helper is stopped."""
        try:
            await trio.sleep_forever()
        finally:
            try:
                await self._stop()
            except OSError:  # already gone
                pass


_HELPER: trio.lowlevel.RunVar[JsonHelper] = trio.lowlevel.RunVar("json_helper")


def helper() -> JsonHelper:
    """This trio run's helper (made on first use, with the system task that stops it)."""
    try:
        return _HELPER.get()
    except LookupError:
        made = JsonHelper()
        _HELPER.set(made)
        trio.lowlevel.spawn_system_task(made.guard, name="json helper guard")
        return made
