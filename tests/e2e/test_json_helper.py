"""The daemon's JSON helper process: reused across heavy bodies, replaced when killed, and never
left running once the daemon is gone (real daemon, real helper, real upstream)."""

from __future__ import annotations

import json
import os
import signal

import trio

from tests.e2e.conftest import Daemon, StartDaemon, proc_table
from tests.fakes import fake_cmd, free_port

#: a 3 MB body: above heavy_body.LARGE_BODY, so the helper reads it
PADDING = [{}] * 1_000_000


def heavy(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [], "x": PADDING}).encode()


def helpers(daemon: Daemon) -> list[int]:
    """Live helper processes whose parent is the daemon."""
    return [
        pid
        for pid, (ppid, _, cmdline) in proc_table().items()
        if ppid == daemon.process.pid and b"json_worker" in cmdline
    ]


def nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


async def wait_gone(pid: int, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while pid in proc_table():  # gone, or a zombie nobody reaps
            await trio.sleep(0.02)


async def start(start_daemon: StartDaemon) -> Daemon:
    return await start_daemon(
        f"""
start_port = {free_port()}
[models.a]
cmd = {json.dumps(fake_cmd("--model-id", "a"))}
"""
    )


async def test_one_helper_reads_every_heavy_body_and_a_killed_one_is_replaced(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start(start_daemon)
    async with daemon.client() as client:
        assert helpers(daemon) == []  # started on the first heavy body, not before
        first = await client.post("/v1/chat/completions", content=heavy("nope"))
        assert first.json()["error"]["code"] == "model_not_found"
        (pid,) = helpers(daemon)
        second = await client.post("/v1/chat/completions", content=heavy("nope"))
        assert second.json()["error"]["code"] == "model_not_found"
        assert helpers(daemon) == [pid]  # the same process read both
        assert nice(pid) > nice(daemon.process.pid)  # the daemon's loop wins a busy CPU

        os.kill(pid, signal.SIGKILL)
        await wait_gone(pid)
        answered = await client.post("/v1/chat/completions", content=heavy("a"))
        assert answered.status_code == 200
        (new,) = helpers(daemon)
        assert new != pid
        daemon.note_upstreams()


async def test_no_helper_outlives_the_daemon(start_daemon: StartDaemon) -> None:
    for stop in (signal.SIGTERM, signal.SIGKILL):
        daemon = await start(start_daemon)
        async with daemon.client() as client:
            answer = await client.post("/v1/chat/completions", content=heavy("nope"))
            assert answer.status_code == 404
        (pid,) = helpers(daemon)
        daemon.signal(stop)  # SIGKILL: nothing of the daemon runs; the helper sees EOF
        await daemon.wait_exit()
        await wait_gone(pid)
