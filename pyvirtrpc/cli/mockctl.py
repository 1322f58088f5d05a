"""``pyvirtrpc mockctl``: make things happen in a running mock libvirtd.

    pyvirtrpc mockctl --socket /tmp/mock.sock write DOMAIN DEV OFFSET LENGTH
    pyvirtrpc mockctl --socket /tmp/mock.sock grow DOMAIN DEV PHYSICAL
    pyvirtrpc mockctl --socket /tmp/mock.sock info DOMAIN DEV

``write``: the guest of DOMAIN writes LENGTH bytes at guest offset OFFSET of disk DEV
("vda"), which allocates host space and may fire a block threshold. ``grow``: set the
disk's physical size (a block device was extended). Sizes take qemu-io's suffixes
(``32M``, ``4k``). Each prints the disk's capacity, allocation, physical size and
threshold afterwards. This goes over the mock's own RPC program (protocol/mockctl.x).
"""

from __future__ import annotations

import argparse
import sys

import trio

from pyvirtrpc.backends.mock.monitor import parse_size
from pyvirtrpc.client.connection import open_connection
from pyvirtrpc.errors import Error
from pyvirtrpc.gen import mockctl
from pyvirtrpc.gen.mockctl import Procedure as M


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mockctl", help="drive guest writes and disk growth in a running mock",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the mock's unix socket")
    where.add_argument("-c", "--connect", metavar="URI", help="the mock's URI")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    write = actions.add_parser("write", help="the guest writes to a disk")
    grow = actions.add_parser("grow", help="set a disk's physical size")
    info = actions.add_parser("info", help="show a disk's sizes and threshold")
    for action in (write, grow, info):
        action.add_argument("domain")
        action.add_argument("dev")
    write.add_argument("offset", type=size)
    write.add_argument("length", type=size)
    grow.add_argument("physical", type=size)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    uri = args.connect or f"test+unix:///default?socket={args.socket}"
    try:
        disk = trio.run(_call, uri, args)
    except (Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"capacity: {disk.capacity}\nallocation: {disk.allocation}\n"
          f"physical: {disk.physical}\nthreshold: {disk.threshold}")
    return 0


async def _call(uri: str, args: argparse.Namespace) -> mockctl.DiskInfo:
    async with open_connection(uri, keepalive=None) as conn:
        if args.action == "write":
            write = await conn.call(
                mockctl.PROCEDURES[M.DISK_WRITE],
                mockctl.DiskWriteArgs(args.domain, args.dev, args.offset, args.length),
            )
            return write.info  # type: ignore[no-any-return]
        if args.action == "grow":
            grow = await conn.call(
                mockctl.PROCEDURES[M.DISK_GROW],
                mockctl.DiskGrowArgs(args.domain, args.dev, args.physical),
            )
            return grow.info  # type: ignore[no-any-return]
        info = await conn.call(
            mockctl.PROCEDURES[M.DISK_GET_INFO], mockctl.DiskGetInfoArgs(args.domain, args.dev)
        )
        return info.info  # type: ignore[no-any-return]
