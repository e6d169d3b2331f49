"""The hand-off to hypercorn: the private pieces it relies on are there, and ``[server]`` maps
onto hypercorn's own knobs."""

from __future__ import annotations

from importlib.metadata import version

from llama_swap_trio.config.model import ServerConfig
from llama_swap_trio.edge.handoff import hypercorn_config, private_pieces_missing


def test_the_private_hypercorn_pieces_the_edge_uses_are_where_it_expects_them() -> None:
    missing = private_pieces_missing()
    assert not missing, (
        f"hypercorn {version('hypercorn')} moved what llama_swap_trio/edge/handoff.py uses: "
        + ", ".join(missing)
        + ". Pin hypercorn to a release the suite passes (pyproject.toml), or adapt handoff.py."
    )


def test_server_settings_map_onto_hypercorn() -> None:
    settings = ServerConfig(head_timeout=7.0, keep_alive_timeout=11.0)
    hc = hypercorn_config(settings, 5.0)
    assert hc.keep_alive_timeout == 11.0
    assert hc.ssl_handshake_timeout == 7.0  # the TLS handshake is part of the first head's time
    assert hc.read_timeout is None  # a per-read timeout would close quiet websockets
    assert hc.graceful_timeout == 5.0
    assert hc.include_server_header is False
