"""``pyvirtrpc threshold DOMAIN DEV VALUE``: arm a disk's block threshold.

    pyvirtrpc threshold vm1 vda 20G        # bytes, with virsh's scaled suffixes
    pyvirtrpc threshold vm1 vda 87.5%      # a share of the disk's capacity

VALUE is a number of bytes with libvirt's scaled suffixes (``K``, ``M``, ``G``... and
``KiB``, ``MiB``... are powers of 1024; ``KB``, ``MB``... powers of 1000), or a percentage
with up to three decimals (thousandths of a percent) of the disk's capacity as
virDomainGetBlockInfo reports it. ``0`` clears the threshold. DEV is the disk's target
(``vda``) or one image of its chain (``vda[1]``). It prints the threshold set, in bytes;
the daemon sends a ``block-threshold`` event (see ``pyvirtrpc events``) once a write goes
past it.
"""

from __future__ import annotations

import argparse
import sys

import trio

from pyvirtrpc.cli.common import add_connect, connect_uri, error, lookup_domain
from pyvirtrpc.client import open_connection
from pyvirtrpc.errors import Error, NoDomainError
from pyvirtrpc.scaled import Percent, ValueFormatError, parse_threshold


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "threshold", help="set a disk's block threshold (bytes or a percentage)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connect(parser)
    parser.add_argument("domain", help="domain name, id or uuid")
    parser.add_argument("dev", help="disk target (vda) or image (vda[1])")
    parser.add_argument("value", help="bytes (20G, 512MiB...) or a percentage (80%%, 87.5%%)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        value = parse_threshold(args.value)
    except ValueFormatError as exc:
        error(exc)
        if exc.reason is not None:
            error(exc.reason)
        return 1
    try:
        threshold = trio.run(_set, connect_uri(args), args.domain, args.dev, value)
    except NoDomainError as exc:
        error(f"failed to get domain '{args.domain}'")
        error(exc)
        return 1
    except (Error, OSError) as exc:
        error(exc)
        return 1
    print(threshold)
    sys.stdout.flush()
    return 0


async def _set(uri: str | None, key: str, dev: str, value: int | Percent) -> int:
    async with open_connection(uri, keepalive=None) as conn:
        domain = await lookup_domain(conn, key)
        if isinstance(value, Percent):
            return await domain.set_block_threshold(dev, percent=value.thousandths / 1000)
        return await domain.set_block_threshold(dev, value)
