"""The health watchdog (SPEC 6.4): a ready model that stops answering is stopped as wedged.

While a model is ready, its ``check_endpoint`` is probed every ``health_interval`` seconds, each
probe bounded by :data:`PROBE_TIMEOUT`. After ``health_failures`` failed probes in a row (no
answer, or not 200) the model is wedged: a server stopped by SIGSTOP, deadlocked, or stuck in a
driver call answers nothing while its port still accepts connections, so requests would hang
until their clients gave up. The owner then stops it (SIGTERM, SIGKILL after ``unload_timeout``),
which ends its requests in flight; the next request starts it again. Detection takes at most
``health_failures`` x (``health_interval`` + :data:`PROBE_TIMEOUT`).

Settings are read again before every probe, so a reload that keeps the model changes them for
the process already running. No watchdog runs for ``check_endpoint = "none"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.upstream.probe import Target, health_status

log = logging.getLogger(__name__)

#: bound on one probe of the watchdog
PROBE_TIMEOUT = 5.0
#: how often a model whose watchdog is off looks whether a reload turned it on
OFF_RECHECK = 1.0


async def watch_health(
    target: Target,
    model: Callable[[], ModelConfig],
    probing: Callable[[], bool],
    on_wedged: Callable[[str], None],
) -> None:
    """Probe until cancelled; call ``on_wedged(why)`` once and return when the model is wedged.

    Args:
        model: the model's current settings.
        probing: whether to probe now (the model is ready, not asleep).
    """
    failures = 0
    while True:
        settings = model()
        off = settings.health_interval <= 0 or settings.check_endpoint == "none"
        await trio.sleep(OFF_RECHECK if off else settings.health_interval)
        settings = model()
        if settings.health_interval <= 0 or settings.check_endpoint == "none" or not probing():
            failures = 0
            continue
        path = settings.check_endpoint
        if not path.startswith("/"):
            path = "/" + path
        status = await health_status(target, path, within=PROBE_TIMEOUT)
        if status == 200:
            failures = 0
            continue
        failures += 1
        answer = "no answer" if status is None else f"status {status}"
        log.warning(
            "[%s] health check %d of %d failed: GET %s: %s",
            settings.id,
            failures,
            settings.health_failures,
            target.url(path),
            answer,
        )
        if failures >= settings.health_failures:
            on_wedged(
                f"[{settings.id}] stopped as wedged: {failures} health checks in a row failed "
                f"(GET {target.url(path)}: {answer} within {PROBE_TIMEOUT:g} s)"
            )
            return
