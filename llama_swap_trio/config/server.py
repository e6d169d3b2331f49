"""Validation of ``[server]`` (SPEC 6.1): timeouts, the connection limit and the TLS files.

Called from the one validation pass (:mod:`validate`); reports ``(key path, message)`` problems
and returns the resolved :class:`~llama_swap_trio.config.model.ServerConfig`. TLS paths are
relative to the config file's folder, as a user editing that file would expect, and the pair is
loaded once here (edge/tls.py), so a bad file is a config error, not a failure at the first client.
"""

from __future__ import annotations

import os

import attrs

from llama_swap_trio.config.model import Config, ServerConfig
from llama_swap_trio.config.problems import Problems
from llama_swap_trio.config.schema import RawServer
from llama_swap_trio.edge.tls import TLSFileError, server_context


def check_server(raw: RawServer, config_path: str, problems: Problems) -> ServerConfig:
    """The resolved ``[server]`` table; problems go to ``problems``."""
    for name in ("head_timeout", "body_timeout", "keep_alive_timeout"):
        value: float = getattr(raw, name)
        if not value > 0:  # written this way so that nan fails too
            problems.add(("server", name), f"must be > 0, got {value}")
    if raw.max_connections < 0:
        problems.add(("server", "max_connections"), f"must be >= 0, got {raw.max_connections}")
    cert, key = raw.tls_cert_file, raw.tls_key_file
    if (cert is None) != (key is None):
        missing, given = ("tls_key_file", "tls_cert_file")
        if cert is None:
            missing, given = given, missing
        problems.add(("server", missing), f"must be set together with server.{given}")
        cert = key = None
    if cert is not None and key is not None:
        base = os.path.dirname(os.path.abspath(config_path))
        cert, key = os.path.join(base, cert), os.path.join(base, key)
        try:
            server_context(cert, key)
        except TLSFileError as error:
            which = "tls_key_file" if error.which == "key" else "tls_cert_file"
            problems.add(("server", which), str(error))
    return ServerConfig(
        head_timeout=raw.head_timeout,
        body_timeout=raw.body_timeout,
        keep_alive_timeout=raw.keep_alive_timeout,
        max_connections=raw.max_connections,
        tls_cert_file=cert,
        tls_key_file=key,
    )


def with_tls_flags(config: Config, cert: str | None, key: str | None) -> Config | str:
    """``config`` with ``--tls-cert``/``--tls-key`` (paths relative to the current directory)
    in place of its ``tls_cert_file``/``tls_key_file``; or what is wrong with the flags."""
    if cert is None and key is None:
        return config
    if cert is None or key is None:
        return "--tls-cert and --tls-key go together"
    cert, key = os.path.abspath(cert), os.path.abspath(key)
    try:
        server_context(cert, key)
    except TLSFileError as error:
        return f"--tls-{error.which}: {error}"
    server = attrs.evolve(config.server, tls_cert_file=cert, tls_key_file=key, tls_from_flags=True)
    return attrs.evolve(config, server=server)
