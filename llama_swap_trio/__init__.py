"""llama-swap-trio: a model-swapping proxy for local inference servers."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: the installed distribution's version: ``--version`` and ``GET /api/version`` show it
    __version__ = version("llama-swap-trio")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
