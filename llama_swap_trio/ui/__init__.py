"""The web UI (SPEC 6.3): static files shipped in the package and the route that serves them."""

from __future__ import annotations

from llama_swap_trio.ui.route import is_ui_path, serve_ui

__all__ = ["is_ui_path", "serve_ui"]
