"""A reload with a changed ``[server]`` table (real daemon, the TOML edited): the browser rules
apply at once, every other changed key is named in one warning that says a restart applies it."""

from __future__ import annotations

import json
import signal

import httpx

from tests.e2e.conftest import Daemon, StartDaemon
from tests.fakes import fake_cmd, free_port

RESTART = "applied only when the daemon restarts"
PAGE = "http://app.example"


def config(server: str, port: int) -> str:
    return f"""
start_port = {port}
[server]
{server}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""


async def from_page(daemon: Daemon) -> httpx.Response:
    async with daemon.client(headers={"origin": PAGE}) as client:
        return await client.get("/v1/models")


def warnings(daemon: Daemon) -> list[str]:
    return [line for line in daemon.lines if RESTART in line]


async def test_a_reload_applies_the_browser_rules_and_names_the_keys_that_need_a_restart(
    start_daemon: StartDaemon,
) -> None:
    port = free_port()
    daemon = await start_daemon(config("head_timeout = 30", port))
    assert (await from_page(daemon)).status_code == 403

    # when the timeouts, the connection limit and the allowed origins change, and SIGHUP comes
    daemon.config_path.write_text(
        config(f'head_timeout = 5\nmax_connections = 50\ncors_origins = ["{PAGE}"]', port)
    )
    daemon.signal(signal.SIGHUP)
    line = await daemon.wait_for_line(RESTART, timeout=20)
    assert "server.head_timeout (30.0 -> 5.0)" in line
    assert "server.max_connections (0 -> 50)" in line
    assert "body_timeout" not in line  # unchanged keys are not named
    assert "cors_origins" not in line
    await daemon.wait_for_line("server.cors_origins applied", timeout=20)
    allowed = await from_page(daemon)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == PAGE

    # a second reload (by the API) still says what waits for a restart
    async with daemon.client() as client:
        assert (await client.post("/api/config/reload")).json()["ok"] is True
    assert len(warnings(daemon)) == 2
    assert (await from_page(daemon)).status_code == 200


async def test_a_reload_without_server_changes_warns_of_nothing(start_daemon: StartDaemon) -> None:
    port = free_port()
    daemon = await start_daemon(config("keep_alive_timeout = 20", port))
    daemon.config_path.write_text(
        config("keep_alive_timeout = 20", port)
        + f"[models.b]\ncmd = {json.dumps(fake_cmd('--model-id', 'b'))}\n"
    )
    async with daemon.client() as client:
        outcome = (await client.post("/api/config/reload")).json()
    assert outcome["added"] == ["b"], outcome
    assert warnings(daemon) == []
    assert not any("server." in line and "applied" in line for line in daemon.lines)
