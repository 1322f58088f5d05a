"""The ``pyvirtrpc`` command line: one module per subcommand, listed in COMMANDS.

Each module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments; returns the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS: tuple[str, ...] = ("mock", "mockctl", "events", "threshold", "watch", "demo", "relay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyvirtrpc", description="libvirt's RPC protocol in pure Python"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pyvirtrpc.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        status: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except (BrokenPipeError, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup) and exc.split(BrokenPipeError)[1] is not None:
            raise
        # The reader went away (`| head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return status


if __name__ == "__main__":
    sys.exit(main())
