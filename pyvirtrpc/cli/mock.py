"""``pyvirtrpc mock``: run the mock libvirtd in the foreground.

    pyvirtrpc mock --socket /tmp/mock.sock [--ro-socket /tmp/mock.sock-ro] [--tcp HOST:PORT]

It serves the mock hypervisor (domain ``test``, as libvirt's test driver starts) until
SIGINT or SIGTERM, logs to stderr, and removes its socket files on exit. Clients use
``test+unix:///default?socket=/tmp/mock.sock`` (virsh -c ..., libvirt.open(...)).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from pyvirtrpc.backends.mock import MockBackend
from pyvirtrpc.sansio.server import (
    DEFAULT_KEEPALIVE_COUNT,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_MAX_QUEUED_EVENTS,
    DEFAULT_MAX_REQUESTS,
)
from pyvirtrpc.server import (
    DEFAULT_MAX_CLIENTS,
    Server,
    TcpAddress,
    UnixAddress,
    listen_addresses,
)

log = logging.getLogger("pyvirtrpc.mock")


def tcp_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mock", help="run the mock libvirtd (in the foreground)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--socket", required=True, help="read-write unix socket to create")
    parser.add_argument("--ro-socket", help="read-only unix socket to create")
    parser.add_argument("--tcp", type=tcp_address, metavar="HOST:PORT",
                        help="also listen on TCP (read-write, no authentication)")
    parser.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS)
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS,
                        help="requests in flight per client (libvirtd's max_client_requests)")
    parser.add_argument("--max-queued-events", type=int, default=DEFAULT_MAX_QUEUED_EVENTS,
                        help="events a client may leave unread before it is disconnected")
    parser.add_argument("--keepalive-interval", type=float, default=DEFAULT_KEEPALIVE_INTERVAL)
    parser.add_argument("--keepalive-count", type=int, default=DEFAULT_KEEPALIVE_COUNT)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each client")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    server = Server(
        MockBackend(),
        max_clients=args.max_clients,
        max_requests=args.max_requests,
        max_queued_events=args.max_queued_events,
        keepalive_interval=args.keepalive_interval,
        keepalive_count=args.keepalive_count,
    )
    addresses = listen_addresses(args.socket, args.ro_socket, args.tcp)
    failure: BaseException | None = None
    try:
        trio.run(_serve, server, addresses)
    except* OSError as group:  # cannot listen: address in use, no such folder...
        failure = group.exceptions[0]
    if failure is not None:
        print(f"pyvirtrpc mock: {failure}", file=sys.stderr)
        return 1
    return 0


async def _serve(server: Server, addresses: list[UnixAddress | TcpAddress]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, *addresses)
            shown = [str(a.path) for a in addresses if isinstance(a, UnixAddress)]
            hosts = [a.host for a in addresses if isinstance(a, TcpAddress)]
            shown += [f"{host}:{port}" for host in hosts for port in server.tcp_ports]
            print(f"pyvirtrpc mock: listening on {', '.join(shown)}", file=sys.stderr,
                  flush=True)
            async for signum in signals:
                log.warning("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
