"""Which changed ``[server]`` keys a reload names (reload_server.py)."""

from __future__ import annotations

import attrs

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.reload_server import server_changes

RUNNING = ServerConfig(tls_cert_file="/c/flag.crt", tls_key_file="/c/flag.key")


def test_restart_keys_are_compared_with_what_runs_and_live_ones_with_the_last_config() -> None:
    previous = attrs.evolve(RUNNING, body_timeout=10.0, cors_origins=("http://a.example",))
    new = attrs.evolve(previous, tls_cert_file=None, tls_key_file=None)
    changes = server_changes(RUNNING, previous, new, tls_from_flags=False)
    assert changes.restart == {
        "server.body_timeout": (60.0, 10.0),  # changed by an earlier reload: still waiting
        "server.tls_cert_file": ("/c/flag.crt", None),
        "server.tls_key_file": ("/c/flag.key", None),
    }
    assert changes.live == []  # cors_origins already applied by the earlier reload


def test_tls_set_by_the_flags_is_not_compared_with_the_file() -> None:
    new = ServerConfig(allowed_hosts=("llm.lan",))
    changes = server_changes(RUNNING, RUNNING, new, tls_from_flags=True)
    assert changes.restart == {}
    assert changes.live == ["server.allowed_hosts"]
