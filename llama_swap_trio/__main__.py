"""``python -m llama_swap_trio`` is the ``llama-swap-trio`` command."""

from llama_swap_trio.cli import main

raise SystemExit(main())
