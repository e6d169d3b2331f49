"""``[server]`` (SPEC 6.1): defaults, strict types, ranges, and the TLS pair (both or neither,
readable, a key that matches its certificate), each problem with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from llama_swap_trio.config import ConfigError, load_config, load_config_text
from llama_swap_trio.config.model import ServerConfig

M = '[models.m]\ncmd = "srv --port ${PORT}"\n'


def problems_of(text: str, path: Path | None = None) -> list[str]:
    """The problems of ``text``, given as text or (with ``path``) as a file."""
    if path is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        _ = load_config_text(text, environ={}) if path is None else load_config(path, environ={})
    return caught.value.problems


def test_defaults() -> None:
    assert load_config_text(M, environ={}).server == ServerConfig(
        head_timeout=30.0, body_timeout=60.0, keep_alive_timeout=75.0, max_connections=0
    )


def test_values_are_read_and_ints_are_fine_seconds() -> None:
    text = M + "[server]\nhead_timeout = 5\nbody_timeout = 2.5\nmax_connections = 100\n"
    server = load_config_text(text, environ={}).server
    assert (server.head_timeout, server.body_timeout, server.max_connections) == (5.0, 2.5, 100)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('head_timeout = "30"', "server.head_timeout: expected float, got str '30'"),
        ("max_connections = 1.5", "server.max_connections: expected int, got float 1.5"),
        ("keep_alive_timout = 5", "server.keep_alive_timout: unknown key (did you mean"),
        ("tls_cert_file = 1", "server.tls_cert_file: expected str, got int 1"),
    ],
)
def test_wrong_types_and_unknown_keys(table: str, problem: str) -> None:
    (line,) = problems_of(M + "[server]\n" + table + "\n")
    assert line.startswith("config.toml: " + problem), line


def test_every_range_problem_is_reported_at_once() -> None:
    text = M + "[server]\nhead_timeout = 0\nbody_timeout = -1\nkeep_alive_timeout = nan\n"
    text += "max_connections = -1\n"
    assert problems_of(text) == [
        "config.toml: server.head_timeout: must be > 0, got 0.0",
        "config.toml: server.body_timeout: must be > 0, got -1.0",
        "config.toml: server.keep_alive_timeout: must be > 0, got nan",
        "config.toml: server.max_connections: must be >= 0, got -1",
    ]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, written next to the config."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls_paths_are_relative_to_the_config_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(M + '[server]\ntls_cert_file = "cert.pem"\ntls_key_file = "key.pem"\n')
    server = load_config(config_path, environ={}).server
    assert (server.tls_cert_file, server.tls_key_file) == (str(pair[0]), str(pair[1]))


def test_tls_needs_both_files() -> None:
    assert problems_of(M + '[server]\ntls_cert_file = "c.pem"\n') == [
        "config.toml: server.tls_key_file: must be set together with server.tls_cert_file"
    ]


def test_an_unreadable_tls_file_is_a_config_error(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    text = M + '[server]\ntls_cert_file = "cert.pem"\ntls_key_file = "missing.pem"\n'
    (line,) = problems_of(text, tmp_path / "config.toml")
    assert "server.tls_key_file: cannot read the key file" in line
    assert "missing.pem" in line


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    other = trustme.CA().issue_cert("localhost")
    other.private_key_pem.write_to_path(tmp_path / "other-key.pem")
    text = M + '[server]\ntls_cert_file = "cert.pem"\ntls_key_file = "other-key.pem"\n'
    (line,) = problems_of(text, tmp_path / "config.toml")
    assert "server.tls_key_file: the key in" in line
    assert "does not match the certificate" in line


def test_a_file_that_is_no_certificate_is_a_config_error(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    text = M + '[server]\ntls_cert_file = "junk.pem"\ntls_key_file = "key.pem"\n'
    (line,) = problems_of(text, tmp_path / "config.toml")
    assert "server.tls_cert_file: cannot load the certificate" in line
