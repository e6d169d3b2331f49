"""What a reload does with a changed ``[server]`` table (docs/server.md).

The listener is built once, at start: its timeouts, connection limit and TLS context live in the
edge (and in hypercorn's config for the connections handed to it), so a reload cannot change them
without a restart. The browser rules (``cors_origins``, ``allowed_hosts``) are read by the app,
which each reload builds anew from the new configuration: those apply at once.

:func:`server_changes` compares the reloaded file's table with what is in effect, and
:func:`log_server_changes` says so: one warning naming every key that needs a restart (compared
with the values the listener runs with, so it repeats on each reload until the daemon restarts),
and one info line naming the browser keys applied now.
"""

from __future__ import annotations

import logging

import attrs

from llama_swap_trio.config.model import ServerConfig

log = logging.getLogger("llama_swap_trio")

#: read by the listener at start: a change applies when the daemon restarts
RESTART_KEYS = (
    "head_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "max_connections",
    "tls_cert_file",
    "tls_key_file",
)
#: read by the app, which each reload rebuilds: applied at once
LIVE_KEYS = ("cors_origins", "allowed_hosts")


@attrs.frozen
class ServerChanges:
    #: ``server.KEY`` paths whose new value waits for a restart, with ``(running, new)``
    restart: dict[str, tuple[object, object]]
    #: ``server.KEY`` paths applied by this reload
    live: list[str]


def server_changes(
    listener: ServerConfig, previous: ServerConfig, new: ServerConfig, *, tls_from_flags: bool
) -> ServerChanges:
    """How ``new`` (the reloaded file) differs: restart keys against ``listener`` (what runs),
    live keys against ``previous`` (the configuration it replaces). With ``tls_from_flags``
    (``--tls-cert``/``--tls-key``) the file's TLS keys are not the ones in effect: not compared."""
    restart = {}
    for key in RESTART_KEYS:
        if tls_from_flags and key.startswith("tls_"):
            continue
        running, wanted = getattr(listener, key), getattr(new, key)
        if running != wanted:
            restart[f"server.{key}"] = (running, wanted)
    live = [f"server.{k}" for k in LIVE_KEYS if getattr(previous, k) != getattr(new, k)]
    return ServerChanges(restart, live)


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return "unset" if value is None else repr(value)


def log_server_changes(changes: ServerChanges) -> None:
    """Say what the reload did not apply (a warning) and what it applied (info)."""
    if changes.restart:
        log.warning(
            "reload: %s changed in the config file but applied only when the daemon restarts; "
            "still using the values it started with",
            ", ".join(
                f"{key} ({_shown(running)} -> {_shown(new)})"
                for key, (running, new) in changes.restart.items()
            ),
        )
    if changes.live:
        log.info("reload: %s applied", ", ".join(changes.live))
