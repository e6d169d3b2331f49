"""Recognise a llama-swap YAML file given where TOML is expected, to say how to convert it."""

from __future__ import annotations

import re

YAML_HINT = (
    "this looks like a llama-swap YAML file; convert it with `llama-swap-trio import-yaml {path}`"
)

#: a top-level ``key:`` line (YAML mapping) naming a llama-swap key
_YAML_TOP = re.compile(
    r"^(models|groups|macros|hooks|healthCheckTimeout|logLevel|startPort|peers|profiles)\s*:",
    re.M,
)


def looks_like_yaml(text: str, path: str) -> bool:
    """True for a file named ``.yaml``/``.yml``, or one with top-level llama-swap YAML keys
    (called only for text that TOML did not accept)."""
    return path.endswith((".yaml", ".yml")) or _YAML_TOP.search(text) is not None
