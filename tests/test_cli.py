"""The command line as a user runs it: exit codes, messages, and the demo config."""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import openai
import pytest
import trio

from llama_swap_trio.cli import main
from llama_swap_trio.daemon import parse_listen

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo.toml"


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llama_swap_trio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_check_accepts_the_demo_config_and_prints_each_model() -> None:
    result = run_cli("check", "--config", str(DEMO))

    assert result.returncode == 0, result.stderr
    assert "demo-chat" in result.stdout
    assert "demo-coder" in result.stdout
    assert "demo-upstream" in result.stdout  # the resolved command
    assert "http://127.0.0.1:5800" in result.stdout  # ${PORT} resolved in sorted id order


def test_check_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.qwen]\ncmd = "x"\nttl = "300"\nchek_endpoint = "/h"\n')

    result = run_cli("check", "--config", str(bad))

    assert result.returncode == 2
    problems = result.stderr.strip().splitlines()
    assert f"{bad}: models.qwen.ttl: expected int, got str '300'" in problems
    assert any("did you mean 'check_endpoint'" in line for line in problems)
    assert "Traceback" not in result.stderr


def test_check_reports_toml_syntax_errors_with_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.qwen]\ncmd = "x\n')

    result = run_cli("check", "--config", str(bad))

    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert "column" in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(tmp_path / "nope.toml"))

    assert result.returncode == 2
    assert "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_an_address_in_use_says_so_and_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_cli("serve", "--config", str(DEMO), "--listen", f"127.0.0.1:{port}")

    assert result.returncode == 1
    assert "already in use" in result.stderr


@pytest.mark.parametrize("listen", ["8080", "host:", "127.0.0.1:http", "127.0.0.1:70000"])
def test_bad_listen_addresses_exit_2(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)
    assert main(["check", "--config", str(DEMO)]) == 0


def test_listen_accepts_ipv6_brackets() -> None:
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)


def test_listen_without_a_host_means_every_interface() -> None:
    assert parse_listen(":8080") == ("", 8080)
    with pytest.raises(ValueError):
        parse_listen("[]:8080")


async def test_demo_upstream_command_serves_the_openai_sdk() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "llama_swap_trio",
            "demo-upstream",
            "--port",
            str(port),
            "--model-id",
            "demo-x",
            "--tokens-per-second",
            "0",
        ],
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=20)

        def ask() -> tuple[str, str]:
            answer = client.chat.completions.create(
                model="demo-x", messages=[{"role": "user", "content": "hello"}]
            )
            streamed = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in client.chat.completions.create(
                    model="demo-x", messages=[{"role": "user", "content": "hello"}], stream=True
                )
                if chunk.choices
            )
            return answer.choices[0].message.content or "", streamed

        with trio.fail_after(30):
            text, streamed = await trio.to_thread.run_sync(ask)
        assert text
        assert streamed
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"llama-swap-trio {version('llama-swap-trio')}\n"
