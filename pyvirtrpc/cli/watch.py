"""``pyvirtrpc watch``: grow thin disks as guests fill them (see :mod:`pyvirtrpc.watch`).

    pyvirtrpc watch -c qemu:///system --margin 512M --chunk 1G \\
        --extend 'lvextend -L "${NEW_PHYSICAL}b" "$DISK_PATH"'
    pyvirtrpc watch -c URI --percent 80% --extend 'truncate -s "$NEW_PHYSICAL" "$DISK_PATH"'
    pyvirtrpc watch -c MOCK_URI --margin 16M --chunk 32M      # the mock grows its own disks

Every qcow2 disk of every running domain (and of domains that start later) gets a block
threshold at --margin below its physical size, or at --percent of it. When a write passes
it, the --extend command runs (with /bin/sh) with these in its environment: DOMAIN, DEV,
DISK_PATH (the image: PATH stays the command search path), THRESHOLD, EXCESS (from the
event), CAPACITY, ALLOCATION, PHYSICAL, NEW_PHYSICAL (PHYSICAL + --chunk, at most 110% of
the capacity), CHUNK and URI; then the disk's new physical size is read and the threshold
armed again from it. Against pyvirtrpc's mock libvirtd, without --extend, the mock's own
grow control sets the new size. Where the driver has no block thresholds the allocation
is polled every --poll-interval seconds. A lost connection is retried with backoff;
on reconnection every disk is checked and armed again.

It prints a line for everything it does, and a table per disk when it stops (Ctrl-C,
SIGTERM or --duration); --json prints one JSON object per line instead, the table as
objects of kind "summary".
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import trio

from pyvirtrpc.cli.common import add_connect, connect_uri, error
from pyvirtrpc.client import open_connection
from pyvirtrpc.errors import Error
from pyvirtrpc.scaled import Percent, ValueFormatError, parse_percent, parse_scaled
from pyvirtrpc.watch import (
    Extender,
    Level,
    Report,
    Watcher,
    command_extender,
    format_summary,
    mock_grow,
    serves_mockctl,
)


def _size(option: str) -> Any:
    def parse(text: str) -> int:
        try:
            return parse_scaled(text, option)
        except ValueFormatError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _percent(text: str) -> Percent:
    try:
        return Percent(parse_percent(text, "percent"))
    except ValueFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_watch_options(parser: argparse.ArgumentParser, *, margin: str, chunk: str) -> None:
    """The options of the watcher (``watch`` and ``demo`` share them)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--margin", type=_size("margin"), default=parse_scaled(margin),
                       metavar="SIZE",
                       help=f"arm the threshold SIZE below the physical size (default {margin})")
    where.add_argument("--percent", type=_percent, metavar="P%",
                       help="arm the threshold at P%% of the physical size instead (87.5%%)")
    parser.add_argument("--chunk", type=_size("chunk"), default=parse_scaled(chunk),
                        metavar="SIZE", help=f"grow a disk by SIZE each time (default {chunk})")
    parser.add_argument("--extend", metavar="CMD",
                        help="shell command that grows the disk (see the environment above)")
    parser.add_argument("--extend-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="longest run of the command (default 120)")
    parser.add_argument("--poll-interval", type=float, default=5.0, metavar="SECONDS",
                        help="where the driver has no block thresholds (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch", help="grow thin disks when writes pass their block threshold",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connect(parser)
    add_watch_options(parser, margin="512MiB", chunk="1GiB")
    parser.add_argument("--domain", action="append", metavar="NAME",
                        help="watch only this domain (repeatable)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after SECONDS (default: until Ctrl-C or SIGTERM)")
    parser.set_defaults(func=run)


def level_of(args: argparse.Namespace) -> Level:
    return Level(percent=args.percent) if args.percent is not None else Level(margin=args.margin)


def printer(as_json: bool) -> Any:
    """The report callback: a line of text, or of JSON, per report, flushed."""

    def show(report: Report) -> None:
        print(json.dumps(report.json()) if as_json else report.text(), flush=True)

    return show


def print_summary(watcher: Watcher, as_json: bool) -> None:
    if as_json:
        for disk in watcher.summary():
            print(json.dumps({"kind": "summary", **disk.row()}), flush=True)
    else:
        sys.stdout.write("\n" + format_summary(watcher.summary()))
        sys.stdout.flush()


async def choose_extender(uri: str | None, args: argparse.Namespace) -> Extender:
    """--extend's command, else the mock's grow control if the daemon is the mock."""
    if args.extend is not None:
        return command_extender(args.extend, args.extend_timeout)
    async with open_connection(uri, keepalive=None) as conn:
        if await serves_mockctl(conn):
            return mock_grow
    raise ValueError("this daemon is not pyvirtrpc's mock: give --extend CMD, the command "
                     "that grows a disk")


def run(args: argparse.Namespace) -> int:
    return trio.run(_main, args)


async def _main(args: argparse.Namespace) -> int:
    uri = connect_uri(args)
    try:
        extend = await choose_extender(uri, args)
    except (Error, OSError, ValueError) as exc:
        error(exc)
        return 1
    watcher = Watcher(
        uri, level=level_of(args), extend=extend, chunk=args.chunk,
        poll_interval=args.poll_interval, domains=set(args.domain) if args.domain else None,
        report=printer(args.json),
    )
    failure: Error | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            with trio.move_on_after(args.duration if args.duration else float("inf")):
                try:
                    await watcher.run()
                except Error as exc:  # not a lost connection (those are retried)
                    failure = exc
            nursery.cancel_scope.cancel()
    print_summary(watcher, args.json)
    if failure is not None:
        error(failure)
        return 1
    return 0
