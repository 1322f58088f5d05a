"""What several commands share: ``--connect URI`` with libvirt's default, and error lines."""

from __future__ import annotations

import argparse
import os
import sys

from pyvirtrpc.client import Connection, Domain
from pyvirtrpc.errors import NoDomainError


def add_connect(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        "-c", "--connect", metavar="URI",
        help=help or "the daemon to connect to (default: $LIBVIRT_DEFAULT_URI, else the "
        "daemon on the default socket chooses, as with virsh)",
    )


def connect_uri(args: argparse.Namespace) -> str | None:
    """``--connect``, else LIBVIRT_DEFAULT_URI, else None (the server's default)."""
    uri: str | None = args.connect or os.environ.get("LIBVIRT_DEFAULT_URI") or None
    return uri


def error(message: object) -> None:
    """An ``error: ...`` line on stderr, as virsh prints its errors."""
    print(f"error: {message}", file=sys.stderr, flush=True)


async def lookup_domain(conn: Connection, key: str) -> Domain:
    """A domain by id, uuid or name, tried in virsh's order."""
    if key.isdigit() and int(key) > 0:
        try:
            return await conn.lookup_domain(int(key))
        except NoDomainError:
            pass
    return await conn.lookup_domain(key)
