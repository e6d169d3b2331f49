"""A readable summary of a resolved config, for ``llama-swap-trio check``."""

from __future__ import annotations

from llama_swap_trio.config.memory import budget_line, memory_column
from llama_swap_trio.config.model import Config


def describe_config(config: Config) -> list[str]:
    """One line per model, in file order: id, group, port, proxy URL and resolved command.

    The fixed-width columns come first and the command, which may be long, last::

        qwen   group=(default)  port=5800  proxy=http://127.0.0.1:5800  cmd=llama-server ...
    """
    if not config.models:
        return []
    models = list(config.models.values())
    id_width = max(len(model.id) for model in models)
    group_width = max(len(model.group) for model in models)
    port_width = max(len(str(model.port or "-")) for model in models)
    proxy_width = max(len(model.proxy) for model in models)
    # the memory column only where memory is configured, so other configs read as before
    sizes = config.gpu_memory is not None or any(m.memory is not None for m in models)
    lines = []
    for model in models:
        port = "-" if model.port is None else str(model.port)
        line = (
            f"{model.id:<{id_width}}  group={model.group:<{group_width}}  "
            f"port={port:<{port_width}}  proxy={model.proxy:<{proxy_width}}  "
            + (memory_column(model.memory, config.gpu_memory) + "  " if sizes else "")
            + f"cmd={model.cmd}"
        )
        lines.append(line)
    budget = budget_line(config.gpu_memory, {m.id: m.memory for m in models})
    if budget is not None:
        lines.append(budget)
    return lines
