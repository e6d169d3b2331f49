"""Which listen addresses count as loopback for the daemon's warning that anyone on the network
can use the models (SPEC 6.1; the warning itself needs a non-loopback bind, which tests do not
make)."""

from __future__ import annotations

import pytest

from llama_swap_trio.http.browser_safety import is_loopback_name


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("", False),  # every interface
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("myhost.lan", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback_name(host) is loopback
