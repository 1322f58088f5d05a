"""``pyvirtrpc relay``: pyvirtrpc's server in front of a real libvirtd, in the foreground.

    pyvirtrpc relay --socket /run/relay-sock [--ro-socket /run/relay-sock-ro]
                    [--tcp HOST:PORT] --upstream qemu:///system [--pin]
                    [--read-only] [--allow PROC ...] [--deny PROC ...] [--audit FILE]

Each client gets its own connection to the upstream daemon, opened with the URI the client
asked for (``--pin``: always the upstream URI's own); every call, event and stream goes
through (see pyvirtrpc.backends.relay). Clients use e.g.
``qemu+unix:///system?socket=/run/relay-sock``. PROC is a procedure's name
(``DOMAIN_SET_BLOCK_THRESHOLD``, ``QEMU_PROC_DOMAIN_MONITOR_COMMAND``), a remote
procedure's number, or ``qemu:N``; several may be given, comma-separated or repeated.
``--audit -`` writes the audit log (one JSON line per call) to stdout. Runs until SIGINT
or SIGTERM and removes its socket files on exit.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from pyvirtrpc.backends.relay import procedure_key, serve_relay
from pyvirtrpc.cli.mock import tcp_address

log = logging.getLogger("pyvirtrpc.relay")


def procedures(text: str) -> list[str]:
    names = [name for name in text.split(",") if name.strip()]
    for name in names:
        try:
            procedure_key(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "relay", help="serve a real libvirtd through pyvirtrpc (read-only, audited, ...)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--socket", help="read-write unix socket to create")
    parser.add_argument("--ro-socket", help="read-only unix socket to create")
    parser.add_argument("--tcp", type=tcp_address, metavar="HOST:PORT",
                        help="also listen on TCP (read-write, no authentication)")
    parser.add_argument("--upstream", required=True, metavar="URI",
                        help="the libvirt daemon to relay to")
    parser.add_argument("--pin", action="store_true",
                        help="open the upstream URI's name, whatever URI clients ask for")
    parser.add_argument("--read-only", action="store_true",
                        help="let only procedures known not to write through")
    parser.add_argument("--allow", type=procedures, action="append", metavar="PROC[,PROC]",
                        help="let only these procedures through")
    parser.add_argument("--deny", type=procedures, action="append", metavar="PROC[,PROC]",
                        default=[], help="never let these procedures through")
    parser.add_argument("--audit", metavar="FILE",
                        help="append one JSON line per call to FILE ('-': stdout)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each client")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (args.socket or args.ro_socket or args.tcp):
        print("pyvirtrpc relay: give --socket, --ro-socket or --tcp", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    relay = functools.partial(
        serve_relay, args.upstream, args.socket, args.ro_socket, tcp=args.tcp,
        pinned=args.pin, read_only=args.read_only,
        allow=None if args.allow is None else [p for group in args.allow for p in group],
        deny=[p for group in args.deny for p in group],
        audit=sys.stdout if args.audit == "-" else args.audit,
    )
    trio.run(_serve, relay, args.upstream)
    return 0


async def _serve(relay: Callable[..., Awaitable[object]], upstream: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay)
            print(f"pyvirtrpc relay: relaying to {upstream}", file=sys.stderr, flush=True)
            async for signum in signals:
                log.warning("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
