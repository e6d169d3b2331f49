"""ClientPool: one client per upstream process instance."""

from __future__ import annotations

import pytest

from llama_swap_trio.errors import ProxyError
from llama_swap_trio.http.pool import ClientPool

from .forward_support import grant_for


async def test_pool_reuses_the_client_of_one_generation() -> None:
    pool = ClientPool()
    grant = grant_for("http://127.0.0.1:1", generation=1)
    assert await pool.client_for(grant) is await pool.client_for(grant)
    await pool.aclose()


async def test_new_generation_gets_a_new_client_and_closes_the_old() -> None:
    # given a client for generation 1
    pool = ClientPool()
    old = await pool.client_for(grant_for("http://127.0.0.1:1", generation=1))
    # when the upstream restarted (generation 2)
    new = await pool.client_for(grant_for("http://127.0.0.1:1", generation=2))
    # then a fresh client serves it and the stale one is closed
    assert new is not old
    assert old.is_closed
    assert pool.keys() == [("m1", 2)]
    await pool.aclose()
    assert new.is_closed


async def test_retire_closes_the_clients_of_a_stopping_model() -> None:
    pool = ClientPool()
    client = await pool.client_for(grant_for("http://127.0.0.1:1"))
    pool.retire("m1", 1)
    assert client.is_closed
    assert pool.keys() == []
    await pool.aclose()


async def test_retired_instance_gets_no_new_connection() -> None:
    # given generation 1 of m1 is stopping
    pool = ClientPool()
    pool.retire("m1", 1)
    # when a late request asks for a client of that instance, then it is refused (502)
    with pytest.raises(ProxyError) as refused:
        await pool.client_for(grant_for("http://127.0.0.1:1", generation=1))
    assert refused.value.status == 502
    assert "stopping" in str(refused.value)
    # and the next instance (generation 2, after a restart) is served
    assert not (await pool.client_for(grant_for("http://127.0.0.1:1", generation=2))).is_closed
    await pool.aclose()


async def test_retire_up_to_a_generation_keeps_a_newer_process_client() -> None:
    # given clients for generations 1 (stopping) and 2 (already serving again)
    pool = ClientPool()
    await pool.client_for(grant_for("http://127.0.0.1:1", generation=1))
    pool_keys_before = pool.keys()
    newer = await pool.client_for(grant_for("http://127.0.0.1:1", generation=2))
    # when the stop of generation 1 is reported late
    pool.retire("m1", 1)
    # then the newer process's client stays open
    assert pool_keys_before == [("m1", 1)]
    assert not newer.is_closed
    assert pool.keys() == [("m1", 2)]
    await pool.aclose()


async def test_clients_take_the_connect_timeout_of_their_model() -> None:
    pool = ClientPool()
    client = await pool.client_for(grant_for("http://127.0.0.1:1", connect=3.0))
    assert client.connect_timeout == 3.0
    await pool.aclose()
