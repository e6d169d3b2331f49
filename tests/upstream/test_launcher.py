"""The launcher that holds an upstream until the daemon has recorded it (SPEC 6.4, fork window)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from llama_swap_trio.upstream.process import NO_GO_AHEAD, child_env, spawn_gated


async def output_of(proc: trio.Process) -> str:
    assert proc.stdout is not None
    chunks = []
    async for chunk in proc.stdout:
        chunks.append(chunk)
    return b"".join(chunks).decode()


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")[:-1]


async def test_the_command_runs_only_after_the_go_ahead_in_the_same_process(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    proc, go_ahead = await spawn_gated(
        ["sh", "-c", f'echo "$$"; touch {marker}; exec cat'], child_env({})
    )
    try:
        # held: still the launcher, nothing ran
        assert cmdline(proc.pid)[:2] == ["/bin/sh", "-c"]
        assert not marker.exists()
        go_ahead.send()
        with trio.fail_after(10):
            while not marker.exists():
                await trio.sleep(0.01)
        # the command became the very process the daemon recorded; its stdin is /dev/null
        with trio.fail_after(10):
            assert (await output_of(proc)).split() == [str(proc.pid)]
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_launcher_whose_daemon_died_exits_without_running_anything(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    proc, go_ahead = await spawn_gated(["touch", str(marker)], child_env({}))
    # when the go-ahead pipe closes unsent (the kernel does it when the daemon dies)
    go_ahead.close()
    with trio.fail_after(10):
        code = await proc.wait()
    assert code == NO_GO_AHEAD
    assert not marker.exists()


async def test_a_program_that_cannot_run_fails_before_any_launcher_exists(
    tmp_path: Path,
) -> None:
    with pytest.raises(FileNotFoundError):
        await spawn_gated(["no-such-program-xyz"], child_env({}))
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o644)
    with pytest.raises(PermissionError):
        await spawn_gated([str(script)], child_env({}))
