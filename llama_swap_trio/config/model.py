"""The resolved configuration: what the rest of the daemon reads.

These classes are produced by :func:`llama_swap_trio.config.load_config` after TOML parsing, macro
expansion, strict typing and validation. Every default is already applied and every cross-reference
already resolved (aliases to ids, ``ttl = -1`` to the global value, ``unload_timeout = 0`` to the
global value, ``${PORT}`` to a number), so no consumer needs to know the defaulting rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import attrs

from llama_swap_trio.config.memory import SleepConfig

if TYPE_CHECKING:
    from llama_swap_trio.config.parity_model import Parity

LogLevel = Literal["debug", "info", "warn", "error"]
LogToStdout = Literal["proxy", "upstream", "both", "none"]
RouterKind = Literal["group", "matrix"]

#: Name of the implicit group of models that are in no ``[routing.groups.*]``.
DEFAULT_GROUP = "(default)"

#: ``upstream.ignore_paths`` when the config does not set it: static assets never start a model.
DEFAULT_IGNORE_PATHS: tuple[str, ...] = (r"\.(?:js|json|css|png|gif|jpg|jpeg|ico|txt)$",)

#: JSON-like value of ``metadata``, ``filters.set_params`` and macros (TOML gives no ``None``).
JSONValue = object


@attrs.frozen
class Filters:
    strip_params: tuple[str, ...] = ()
    set_params: Mapping[str, JSONValue] = attrs.field(factory=dict)
    #: requested name (model id or alias) -> keys set when the request named it
    set_params_by_id: Mapping[str, Mapping[str, JSONValue]] = attrs.field(factory=dict)


@attrs.frozen
class Timeouts:
    #: seconds for the TCP connect to the upstream; 0 = no limit
    connect: float = 30.0
    #: seconds to wait for the upstream's response head; 0 = no limit
    response_header: float = 0.0


@attrs.frozen
class ModelConfig:
    id: str
    #: the start command, split into argv (comments dropped, continuations joined, macros expanded)
    argv: tuple[str, ...]
    #: the start command as one display string (``shlex.join(argv)``)
    cmd: str
    #: the stop command with macros expanded except ``${PID}``; "" = SIGTERM the process group
    cmd_stop: str
    #: base URL requests are forwarded to, e.g. ``http://127.0.0.1:5800``
    proxy: str
    #: the ``${PORT}`` assigned to this model, or None when its ``cmd`` does not use ``${PORT}``
    port: int | None
    #: health path polled until 200, or "none"
    check_endpoint: str
    #: seconds idle before unload, resolved against ``global_ttl``; 0 = never
    ttl: int
    #: seconds between the stop signal and SIGKILL, resolved (never 0)
    unload_timeout: int
    #: aliases from ``aliases`` (not the ``set_params_by_id`` keys; see :attr:`all_aliases`)
    aliases: tuple[str, ...]
    #: added to the daemon's environment when the command runs
    env: Mapping[str, str]
    use_model_name: str = ""
    name: str = ""
    description: str = ""
    unlisted: bool = False
    #: requests admitted at once; 0 = no limit
    concurrency_limit: int = 0
    #: resolved against the global ``send_loading_state``
    send_loading_state: bool = False
    metadata: Mapping[str, JSONValue] = attrs.field(factory=dict)
    filters: Filters = attrs.field(factory=Filters)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    #: the routing group this model belongs to (``DEFAULT_GROUP`` for the implicit one)
    group: str = DEFAULT_GROUP
    #: queue priority from ``[routing.priority]``; higher is served first
    priority: int = 0
    #: never evicted to make room for a request (SPEC 6.5); only TTL, unload, reload, shutdown
    protected: bool = False
    #: seconds between two health probes of the ready model (0 = no watchdog), resolved
    health_interval: float = 10.0
    #: failed probes in a row that make the model wedged (it is stopped), resolved
    health_failures: int = 3
    #: declared bytes, ``"measured"``, or None (counts as 0 against ``gpu_memory``) (SPEC 6.7)
    memory: int | str | None = None
    #: the sleep mode's endpoints; None = eviction stops the model
    sleep: SleepConfig | None = None
    #: bytes a sleeping model still holds
    sleep_memory: int = 0
    #: seconds a loaded model is kept before it may be evicted for another (SPEC 6.5)
    min_residency: float = 0.0
    #: seconds a request may wait for its turn, resolved against the global value; 0 = none
    queue_timeout: float = 0.0
    #: False: requests never load it, only an API load or preload (resolved against the global)
    autoload: bool = True
    #: False: an open ``/upstream`` websocket does not count as in flight
    websockets_hold_model: bool = True

    @property
    def all_aliases(self) -> tuple[str, ...]:
        """``aliases`` followed by the ``set_params_by_id`` keys other than the model id."""
        extra = tuple(k for k in self.filters.set_params_by_id if k != self.id)
        return self.aliases + tuple(k for k in extra if k not in self.aliases)

    def stop_argv(self, pid: int) -> list[str]:
        """The ``cmd_stop`` argv for the upstream whose pid is ``pid`` ([] when unset)."""
        from llama_swap_trio.config.cmdline import split_command  # local: avoid import cycle

        if not self.cmd_stop:
            return []
        return split_command(self.cmd_stop.replace("${PID}", str(pid)))


@attrs.frozen
class GroupConfig:
    name: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@attrs.frozen
class MatrixSet:
    """One expanded alternative of a ``[routing.matrix] sets`` entry."""

    #: the set's name as written in the config
    name: str
    #: the DSL text, for log lines
    dsl: str
    #: model ids that may run together
    models: frozenset[str]


@attrs.frozen
class MatrixConfig:
    #: every expanded alternative of every set, in solver order (referenced sets first, then
    #: declaration order)
    sets: tuple[MatrixSet, ...]
    #: model id -> eviction cost (every model present; default 1)
    evict_costs: Mapping[str, int]


@attrs.frozen
class RoutingConfig:
    router: RouterKind = "group"
    #: every group, including the implicit ``DEFAULT_GROUP`` when some model is in no group
    groups: Mapping[str, GroupConfig] = attrs.field(factory=dict)
    matrix: MatrixConfig | None = None
    #: seconds the oldest waiting request may wait before the models its load would evict are
    #: held back (SPEC 6.5); 0 = off
    starvation_after: float = 30.0


@attrs.frozen
class ActivityConfig:
    """``[activity]`` (SPEC 6.2): the request history."""

    max_entries: int = 10_000
    #: the SQLite file (relative paths resolved against the config file's folder); None = none
    db: str | None = None


@attrs.frozen
class ServerConfig:
    """``[server]`` (SPEC 6.1): how the daemon meets its clients: the listener's timeouts,
    connection limit and TLS, and the browser rules."""

    #: seconds a request head may take to arrive whole
    head_timeout: float = 30.0
    #: longest pause, in seconds, between two reads of a request body
    body_timeout: float = 60.0
    #: seconds an idle keep-alive connection is kept
    keep_alive_timeout: float = 75.0
    #: client connections served at once; 0 = derived from the fd limit (edge/limits.py)
    max_connections: int = 0
    #: absolute paths of the certificate chain and its key (both or neither); None = plain HTTP
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: browser origins allowed besides the loopback ones and the daemon's own (normalised:
    #: lower case, no default port, no trailing ``/``); ``"*"`` allows every origin
    cors_origins: tuple[str, ...] = ()
    #: ``Host`` names accepted besides loopback names and the listen address (lower case)
    allowed_hosts: tuple[str, ...] = ()
    #: the TLS files came from ``--tls-cert``/``--tls-key``, not the file (a reload then leaves
    #: the file's TLS keys alone: reload_server.py)
    tls_from_flags: bool = False


@attrs.frozen
class Config:
    #: the file this was loaded from (for messages and the state file location)
    path: str
    models: Mapping[str, ModelConfig]
    #: alias (from ``aliases`` and ``set_params_by_id`` keys) -> model id
    aliases: Mapping[str, str]
    routing: RoutingConfig
    health_check_timeout: int = 120
    log_level: LogLevel = "info"
    log_to_stdout: LogToStdout = "proxy"
    start_port: int = 5800
    global_ttl: int = 0
    unload_timeout: int = 10
    send_loading_state: bool = False
    include_aliases_in_list: bool = False
    api_keys: tuple[str, ...] = ()
    #: model ids to load at startup, in order (aliases already resolved)
    preload: tuple[str, ...] = ()
    #: ``upstream.ignore_paths``, compiled
    ignore_paths: tuple[re.Pattern[str], ...] = ()
    activity: ActivityConfig = ActivityConfig()
    #: ``[resources] gpu_memory`` in bytes; None = no memory budget
    gpu_memory: int | None = None
    server: ServerConfig = attrs.field(factory=ServerConfig)
    #: ``[peers]``, ``[profiles]``, ``[selectors]`` (SPEC 6.6); empty when none is configured
    parity: Parity = attrs.field(factory=lambda: _empty_parity())

    def resolve(self, name: str) -> ModelConfig | None:
        """The model a request names, by id then by alias; None when unknown."""
        model = self.models.get(name)
        if model is None:
            model_id = self.aliases.get(name)
            if model_id is not None:
                model = self.models[model_id]
        return model


def _empty_parity() -> Parity:
    from llama_swap_trio.config.parity_model import Parity  # local: it imports this module

    return Parity()
