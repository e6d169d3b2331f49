"""Configuration: load a TOML file into the resolved :class:`~llama_swap_trio.config.model.Config`.

The pipeline (each stage in its own module): :mod:`tomli` parsing, :mod:`.macros` expansion,
strict typing against :mod:`.schema`, then :mod:`.validate` which checks values and cross
references and builds the resolved shape of :mod:`.model`. :mod:`.matrix_dsl` parses the matrix
router's set expressions; :mod:`.cmdline` splits commands; :mod:`.describe` formats a config for
the ``check`` command.
"""

from __future__ import annotations

from llama_swap_trio.config.cmdline import split_command
from llama_swap_trio.config.describe import describe_config
from llama_swap_trio.config.load import load_config, load_config_text
from llama_swap_trio.config.problems import ConfigError

__all__ = ["ConfigError", "describe_config", "load_config", "load_config_text", "split_command"]
