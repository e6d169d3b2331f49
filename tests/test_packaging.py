"""The systemd unit and the Containerfile (no container tool here: they are parsed and checked)."""

from __future__ import annotations

import configparser
import json
import shlex
from pathlib import Path

ROOT = Path(__file__).parent.parent
#: Dockerfile/Containerfile instructions (the reference's list)
INSTRUCTIONS = frozenset(
    [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ]
)


def instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) per logical line: comments dropped, ``\\`` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical, pending = pending + line, ""
        word, _, args = logical.partition(" ")
        out.append((word.upper(), args.strip()))
    assert not pending, "a continuation line runs off the end of the file"
    return out


def test_the_containerfile_parses_and_copies_files_that_exist() -> None:
    steps = instructions((ROOT / "Containerfile").read_text())
    assert steps[0][0] == "FROM"
    for word, args in steps:
        assert word in INSTRUCTIONS, word
        if word == "COPY":
            *sources, _destination = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    # an init as PID 1 reaps orphaned grandchildren of upstreams
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    assert entrypoint[2] == "llama-swap-trio"
    assert any(w == "RUN" and "tini" in a for w, a in steps)  # installed, not assumed
    assert dict(steps)["USER"] != "root"
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[0] == "serve"
    assert "--listen" in cmd


def test_the_systemd_unit_reloads_with_sighup_and_runs_as_its_own_user() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(ROOT / "contrib" / "systemd" / "llama-swap-trio.service")
    service = unit["Service"]
    assert service["User"] == "llama-swap-trio"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "llama-swap-trio"
    assert service["KillMode"] == "mixed"  # the daemon stops its upstreams itself
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0].endswith("/llama-swap-trio")
    assert exec_start[1] == "serve"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
