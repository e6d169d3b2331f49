"""Binding ``--listen :PORT``: one dual-stack socket takes IPv4 and IPv6 on one port."""

from __future__ import annotations

import socket

import pytest
import trio

from llama_swap_trio.edge.listen import EVERY_INTERFACE, open_listeners


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_every_interface_is_one_socket_for_ipv4_and_ipv6() -> None:
    (listener,) = await open_listeners(EVERY_INTERFACE, 0, 16)
    async with listener:
        port = listener.socket.getsockname()[1]
        addresses = ["127.0.0.1"] + (["::1"] if has_ipv6_loopback() else [])
        for address in addresses:
            client = await trio.open_tcp_stream(address, port)
            async with client:
                with trio.fail_after(5):
                    accepted = await listener.accept()
                await accepted.aclose()


async def test_a_named_host_binds_as_before() -> None:
    (listener,) = await open_listeners("127.0.0.1", 0, 16)
    async with listener:
        assert listener.socket.getsockname()[0] == "127.0.0.1"


async def test_a_port_in_use_is_an_error() -> None:
    (listener,) = await open_listeners(EVERY_INTERFACE, 0, 16)
    async with listener:
        port = listener.socket.getsockname()[1]
        with pytest.raises(OSError):
            await open_listeners(EVERY_INTERFACE, port, 16)
