"""What ``check`` warns about in a valid config: things that are not errors but will likely fail.

A ``cmd`` whose program is not found on ``PATH`` (the model's ``env`` PATH when it sets one, else
the daemon's, which also searches the directory of our own interpreter) is a warning, not an
error: the program may be installed by the time the model starts, or on the machine the config is
meant for.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

from llama_swap_trio.config.model import Config
from llama_swap_trio.config.problems import format_path


def config_warnings(config: Config, *, bindir: str = "") -> Iterator[str]:
    """One line per warning, like a problem line: ``FILE: models.ID.cmd: warning: ...``."""
    for model_id, model in sorted(config.models.items()):
        program = model.argv[0] if model.argv else ""
        path = model.env.get("PATH", os.environ.get("PATH", os.defpath))
        if bindir:
            path = os.pathsep.join([path, bindir])
        if program and shutil.which(program, path=path) is None:
            where = "is not found" if os.sep in program else "is not found on PATH"
            key = format_path(("models", model_id, "cmd"))
            yield f"{config.path}: {key}: warning: program {program!r} {where}"
