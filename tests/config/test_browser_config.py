"""``server.cors_origins`` and ``server.allowed_hosts``: defaults, spelling, every problem."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import ConfigError, load_config_text


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, environ={})
    return caught.value.problems


def test_defaults_are_empty() -> None:
    server = load_config_text("", environ={}).server
    assert (server.cors_origins, server.allowed_hosts) == ((), ())


def test_origins_and_hosts_are_normalised() -> None:
    server = load_config_text(
        "[server]\n"
        'cors_origins = ["HTTPS://UI.Example:443/", "http://ui.example:3000", "*", "null",'
        ' "http://[::1]:80"]\n'
        'allowed_hosts = ["LLM.home.arpa", "box:9000", "::1", "[fe80::1]:8080"]\n',
        environ={},
    ).server
    assert server.cors_origins == (
        "https://ui.example",
        "http://ui.example:3000",
        "*",
        "null",
        "http://[::1]",
    )
    assert server.allowed_hosts == ("llm.home.arpa", "box:9000", "[::1]", "[fe80::1]:8080")


def test_every_bad_entry_is_reported_with_its_key_path() -> None:
    hint = (
        "must be '*' or an origin such as 'https://ui.example:3000' (scheme://host[:port], no path)"
    )
    host_hint = (
        "must be a host name or address, optionally with ':port' "
        "(such as 'llm.home.arpa' or 'llm.home.arpa:8080')"
    )
    assert problems_of(
        "[server]\n"
        'cors_origins = ["ui.example", "https://ui.example/app", "http://u@ui.example"]\n'
        'allowed_hosts = ["http://llm.lan", "box:port", ""]\n'
    ) == [
        f"config.toml: server.cors_origins[0]: {hint}, got 'ui.example'",
        f"config.toml: server.cors_origins[1]: {hint}, got 'https://ui.example/app'",
        f"config.toml: server.cors_origins[2]: {hint}, got 'http://u@ui.example'",
        f"config.toml: server.allowed_hosts[0]: {host_hint}, got 'http://llm.lan'",
        f"config.toml: server.allowed_hosts[1]: {host_hint}, got 'box:port'",
        f"config.toml: server.allowed_hosts[2]: {host_hint}, got ''",
    ]


def test_a_mistyped_key_does_not_hide_its_neighbours_problems() -> None:
    assert problems_of('[server]\ncors_origins = ["*", 3]\nallowed_hosts = ["a b"]\n') == [
        "config.toml: server.cors_origins[1]: expected str, got int 3",
        "config.toml: server.allowed_hosts[0]: must be a host name or address, optionally with "
        "':port' (such as 'llm.home.arpa' or 'llm.home.arpa:8080'), got 'a b'",
    ]


def test_types_and_unknown_keys() -> None:
    assert problems_of('[server]\ncors_origins = "*"\nallowed_host = []\n') == [
        "config.toml: server.cors_origins: expected an array, got str '*'",
        "config.toml: server.allowed_host: unknown key (did you mean 'allowed_hosts'?)",
    ]
    assert problems_of('server = "x"') == ["config.toml: server: expected a table, got str 'x'"]
