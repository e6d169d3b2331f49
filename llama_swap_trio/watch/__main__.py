"""``python -m llama_swap_trio.watch [--url URL] [--api-key KEY]``: the watch view on its own."""

from __future__ import annotations

import argparse

from llama_swap_trio.watch.client import DEFAULT_URL, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llama-swap-trio watch", description="live terminal view of a running daemon"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="the daemon's address")
    parser.add_argument(
        "--api-key",
        help="the daemon's API key, if it has api_keys set (default: $LLAMA_SWAP_TRIO_API_KEY)",
    )
    args = parser.parse_args(argv)
    return run(args.url, args.api_key)


if __name__ == "__main__":
    raise SystemExit(main())
