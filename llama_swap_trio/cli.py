"""The command line: argument parsing and subcommands, nothing else (SPEC section 1).

Exit codes: 0 normal exit; 2 invalid configuration or arguments; 1 any other fatal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_swap_trio.config.model import Config

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2

DEFAULT_LISTEN = "127.0.0.1:8080"
CONFIG_ENV = "LLAMA_SWAP_TRIO_CONFIG"
LOG_LEVELS = ("debug", "info", "warn", "error")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments already; keep its one-line messages."""


def _default_config() -> str:
    return os.environ.get(CONFIG_ENV) or "config.toml"


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llama-swap-trio",
        description="One daemon and one TOML file in front of your local model servers.",
    )
    from llama_swap_trio import __version__

    parser.add_argument("--version", action="version", version=f"llama-swap-trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_serve_options(p: argparse.ArgumentParser, *, sub: bool) -> None:
        # The subcommand's defaults must not overwrite options given before "serve".
        default = argparse.SUPPRESS if sub else None
        p.add_argument(
            "--config",
            default=default,
            help=f"config file (default: ${CONFIG_ENV}, then ./config.toml)",
        )
        p.add_argument(
            "--listen",
            default=argparse.SUPPRESS if sub else DEFAULT_LISTEN,
            help=(
                f"HOST:PORT to listen on, :PORT for every interface (default {DEFAULT_LISTEN};"
                " port 0 picks a free port)"
            ),
        )
        p.add_argument(
            "--log-level",
            default=default,
            choices=LOG_LEVELS,
            help="overrides the config's log_level",
        )
        p.add_argument("--tls-cert", default=default, metavar="FILE", help="serve HTTPS (PEM)")
        p.add_argument("--tls-key", default=default, metavar="FILE", help="the key of --tls-cert")
        p.add_argument(
            "--watch-config",
            action="store_true",
            default=argparse.SUPPRESS if sub else False,
            help="reload the config when the file changes",
        )

    add_serve_options(parser, sub=False)
    serve = commands.add_parser("serve", help="run the daemon (the default command)")
    add_serve_options(serve, sub=True)

    check = commands.add_parser("check", help="validate a config and show what it resolves to")
    check.add_argument("--config", help=f"config file (default: ${CONFIG_ENV}, then ./config.toml)")

    watch = commands.add_parser("watch", help="live terminal view of a running daemon")
    watch.add_argument("--url", default="http://127.0.0.1:8080", help="the daemon's address")
    watch.add_argument(
        "--api-key",
        help="the daemon's API key, if it has api_keys set (default: $LLAMA_SWAP_TRIO_API_KEY)",
    )

    imp = commands.add_parser(
        "import-yaml", help="convert a llama-swap config.yaml to this TOML format (stdout)"
    )
    imp.add_argument("file", metavar="FILE", help="the llama-swap YAML config")

    commands.add_parser("schema", help="print the JSON Schema of the config format (for editors)")

    demo = commands.add_parser(
        "demo-upstream", help="a small built-in OpenAI-compatible server for trying things out"
    )
    demo.add_argument("--port", type=int, required=True)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--model-id", default="demo")
    demo.add_argument("--startup-delay", type=float, default=0.0, metavar="S")
    demo.add_argument("--tokens-per-second", type=float, default=30.0, metavar="R")
    demo.add_argument(
        "--sleep-mode",
        action="store_true",
        help="answer vLLM's POST /sleep and POST /wake_up (models.<id>.sleep)",
    )
    demo.add_argument(
        "--wake-delay", type=float, default=0.05, metavar="S", help="seconds a wake takes"
    )
    return parser


def _load(config_path: str) -> Config | None:
    """The config at ``config_path``, or None after printing its problems (one a line)."""
    from llama_swap_trio.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def _check(config_path: str) -> int:
    from llama_swap_trio.config.describe import describe_config
    from llama_swap_trio.config.warnings import config_warnings

    config = _load(config_path)
    if config is None:
        return EXIT_USAGE
    for line in describe_config(config):
        print(line)
    for line in config_warnings(config, bindir=os.path.dirname(sys.executable)):
        print(line)
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from llama_swap_trio.daemon import DaemonError, parse_listen, run

    try:
        host, port = parse_listen(args.listen)
    except ValueError as error:
        print(f"--listen: {error}", file=sys.stderr)
        return EXIT_USAGE
    from llama_swap_trio.config.server import with_tls_flags

    config = _load(args.config or _default_config())
    if config is None:
        return EXIT_USAGE
    served = with_tls_flags(config, args.tls_cert, args.tls_key)
    if isinstance(served, str):
        print(served, file=sys.stderr)
        return EXIT_USAGE
    try:
        run(served, host, port, log_level=args.log_level, watch_config=args.watch_config)
    except DaemonError as error:
        print(f"llama-swap-trio: {error}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


def _demo_upstream(args: argparse.Namespace) -> int:
    from llama_swap_trio.demo_upstream import run

    try:
        run(
            args.port,
            args.model_id,
            args.startup_delay,
            args.tokens_per_second,
            host=args.host,
            sleep_mode=args.sleep_mode,
            wake_delay=args.wake_delay,
        )
    except OSError as error:
        print(f"demo-upstream: {error}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


def _import_yaml(path: str) -> int:
    from llama_swap_trio.config import ConfigError
    from llama_swap_trio.config.import_yaml import import_yaml_file

    try:
        sys.stdout.write(import_yaml_file(path))
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "import-yaml":
        return _import_yaml(args.file)
    if args.command == "schema":
        from llama_swap_trio.config.json_schema import schema_text

        sys.stdout.write(schema_text())
        return EXIT_OK
    if args.command == "check":
        return _check(args.config or _default_config())
    if args.command == "watch":
        from llama_swap_trio.watch import run as run_watch

        return run_watch(args.url, args.api_key)
    if args.command == "demo-upstream":
        return _demo_upstream(args)
    return _serve(args)
