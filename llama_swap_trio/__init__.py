"""llama-swap-trio: a model-swapping proxy for local inference servers."""

__version__ = "0.1.0"
