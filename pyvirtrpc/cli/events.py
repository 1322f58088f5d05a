"""``pyvirtrpc events``: print domain events as ``virsh event`` prints them.

    pyvirtrpc events --all --loop [--timeout SECONDS] [--timestamp] [--domain DOMAIN]
    pyvirtrpc events --event block-threshold        # one event, then exit
    pyvirtrpc events --list

Options and output are virsh 9.0's, byte for byte: one line per event (see
:mod:`pyvirtrpc.eventformat`), then ``events received: N`` (after ``event loop timed out``
or ``event loop interrupted`` when that ended it), then an empty line (``-q`` leaves it
out, as ``virsh -q`` does). Without ``--loop`` the first event ends it. The exit status is
0 only if at least one event arrived. ``write-threshold`` is accepted as another name for
``block-threshold``. ``--json`` prints one JSON object per event instead, and nothing else
on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import trio

from pyvirtrpc.cli.common import add_connect, connect_uri, error, lookup_domain
from pyvirtrpc.client import EventsLost, open_connection
from pyvirtrpc.errors import Error, NoDomainError
from pyvirtrpc.eventformat import (
    DOMAIN_EVENT_NAMES,
    EndReason,
    domain_event_id,
    event_json,
    format_disconnect,
    format_event,
    format_summary,
)
from pyvirtrpc.events import ConnectionClosedEvent, DomainEventID

TIMEOUT_MAX = 2**31 // 1000  # virsh keeps the timeout in milliseconds, in an int
# What virsh reports last after a disconnection: deregistering on the dead connection.
CLOSED_SOCKET = "internal error: client socket is closed"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "events", help="print domain events as virsh event does",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connect(parser)
    parser.add_argument("--domain", help="filter by domain name, id or uuid")
    parser.add_argument("--event", metavar="NAME", help="which event type to wait for")
    parser.add_argument("--all", action="store_true",
                        help="wait for all events instead of just one type")
    parser.add_argument("--loop", action="store_true",
                        help="loop until timeout or interrupt, rather than one-shot")
    parser.add_argument("--timeout", metavar="SECONDS", help="timeout seconds")
    parser.add_argument("--list", action="store_true", help="list valid event types")
    parser.add_argument("--timestamp", action="store_true",
                        help="show timestamp for each printed event")
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no empty line at the end (virsh -q)")
    parser.set_defaults(func=run)


def _options_error(args: argparse.Namespace) -> str | None:
    """virsh's refusal of the option combination, or None."""
    for first, second in (("all", "event"), ("list", "all"), ("list", "event")):
        if getattr(args, first) and getattr(args, second):
            return f"Options --{first} and --{second} are mutually exclusive"
    return None


def _timeout(text: str | None) -> int | None:
    """Seconds from ``--timeout`` as virsh reads it; ValueError with virsh's message."""
    if text is None:
        return None
    value = int(text) if text.strip().isdigit() else -1
    if not 0 < value <= TIMEOUT_MAX:
        raise ValueError(f"Numeric value '{text}' for <timeout> option is malformed or "
                         "out of range")
    return value


def run(args: argparse.Namespace) -> int:
    status = _run(args)
    if not args.quiet and not args.json:
        sys.stdout.write("\n")  # virsh's empty line after every command
        sys.stdout.flush()
    return status


def _run(args: argparse.Namespace) -> int:
    problem = _options_error(args)
    if problem is not None:
        error(problem)
        return 1
    if args.list:
        sys.stdout.write("".join(f"{name}\n" for name in DOMAIN_EVENT_NAMES.values()))
        return 0
    if args.event is None and not args.all:
        error("one of --list, --all, or --event <type> is required")
        return 1
    try:
        ids = [domain_event_id(args.event)] if args.event else list(DomainEventID)
        timeout = _timeout(args.timeout)
    except ValueError as exc:
        error(exc)
        return 1
    return trio.run(_listen, args, ids, timeout)


async def _listen(args: argparse.Namespace, ids: list[DomainEventID], timeout: int | None) -> int:
    uri = connect_uri(args)
    count = 0
    end: EndReason = "done"
    closed: int | None = None
    try:
        async with open_connection(uri) as conn:
            domain = None
            if args.domain is not None:
                try:
                    domain = await lookup_domain(conn, args.domain)
                except NoDomainError:
                    error(f"failed to get domain '{args.domain}'")
                    return 1
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async with conn.domain_events(*ids, domain=domain) as events, \
                        trio.open_nursery() as nursery:

                    async def interrupt() -> None:
                        nonlocal end
                        async for _ in signals:
                            end = "interrupt"
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(interrupt)
                    with trio.move_on_after(timeout if timeout is not None else float("inf")) \
                            as waiting:
                        async for item in events:
                            if isinstance(item, EventsLost):
                                error(f"{item.count} events lost (not read in time)")
                                continue
                            millis = time.time_ns() // 1_000_000 if args.timestamp else None
                            if args.json:
                                print(json.dumps(event_json(item, millis)), flush=True)
                            if isinstance(item, ConnectionClosedEvent):
                                closed = item.reason
                                break
                            if not args.json:
                                sys.stdout.write(format_event(item, millis))
                                sys.stdout.flush()
                            count += 1
                            if not args.loop:
                                break
                    if waiting.cancelled_caught:
                        end = "timeout"
                    nursery.cancel_scope.cancel()
                if closed is not None:
                    line = format_disconnect(closed, conn.uri or uri or "")
                    if line is not None:
                        sys.stderr.write(line)
    except (Error, OSError) as exc:
        error(exc)
        return 1
    if not args.json:
        sys.stdout.write(format_summary(count, end))
        sys.stdout.flush()
    if closed is not None:
        error(CLOSED_SOCKET)
        return 1
    return 0 if count else 1
