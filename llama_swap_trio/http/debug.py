"""``GET /debug/state``: what leak checks need, only when ``LLAMA_SWAP_TRIO_DEBUG=1``.

The reliability tests (tests/reliability) drive the real daemon and must prove that nothing is
left behind: no in-flight count, no queue entry, no upstream process, no file descriptor. The
router snapshot has the first two; the rest lives in the daemon process. The endpoint is off by
default (an unknown path, 404) because it tells more than a client needs: pids and fd counts.
With ``api_keys`` set it needs a key like every other endpoint.
"""

from __future__ import annotations

import os
from typing import Any

from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.routing.api import RouterLike

#: the environment variable that turns the endpoint on (value ``1``)
DEBUG_ENV = "LLAMA_SWAP_TRIO_DEBUG"
DEBUG_PATH = "/debug/state"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV) == "1"


def open_fd_count() -> int | None:
    """File descriptors this process holds (Linux ``/proc``), or None elsewhere."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def debug_state(router: RouterLike, pool: ClientPool) -> dict[str, Any]:
    """``{"pid", "open_fds", "models": [{id, state, in_flight, pid}], "queue", "pool"}``."""
    snapshot = router.snapshot()
    models = []
    for status in snapshot.models:
        pid = getattr(router.upstream(status.id), "pid", None)
        models.append(
            {"id": status.id, "state": str(status.state), "in_flight": status.in_flight, "pid": pid}
        )
    return {
        "pid": os.getpid(),
        "open_fds": open_fd_count(),
        "models": models,
        "queue": [{"model": e.model, "position": e.position} for e in snapshot.queue],
        "pool": [f"{model_id}#{generation}" for model_id, generation in pool.keys()],  # noqa: SIM118
    }
