"""``pyvirtrpc demo``: the thin-provisioning loop, start to end, in a few seconds.

    pyvirtrpc demo                          # an embedded mock libvirtd; nothing to set up
    pyvirtrpc demo --connect URI            # a real libvirtd with qemu (or a running mock)
    pyvirtrpc demo --connect URI --domain NAME

Without --connect it starts a mock libvirtd in this process (on a unix socket in a
temporary folder), starts the watcher (``pyvirtrpc watch``) on it, then starts a domain
whose disk is a qcow2 image on a 64 MiB block device, and makes its guest write 8 MiB
after 8 MiB (over the mock's mockctl program). Each time a write passes the block
threshold, 16 MiB below the end of the device, the daemon sends a block-threshold event,
the watcher grows the device by 32 MiB (the mock's grow control) and arms the threshold
again. It stops once the disk has been grown --extensions times, and prints a table.

With --connect URI to a libvirtd with the qemu driver, it makes a fresh 256 MiB qcow2 image
in a temporary folder (given to the daemon's user when run as root), starts a transient
domain "pyvirtrpc-demo" on it (qemu with no OS, which is enough), and makes qemu write
through the monitor (HMP qemu-io, as virsh qemu-monitor-command does). The extension is
--extend, by default ``truncate -s "$NEW_PHYSICAL" "$DISK_PATH"``: qemu then allocates in the
grown file, and libvirt reports the file's size as its physical size. The domain and the
image are removed at the end. With --domain NAME it uses that running domain instead (its
first qcow2 disk; writes go to guest offsets from --offset on, so choose a disk whose
data you can lose). With --connect to a pyvirtrpc mock, the demo runs there as without
--connect.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import trio

from pyvirtrpc.backends.mock import MockBackend, MockHypervisor
from pyvirtrpc.cli.common import add_connect, error
from pyvirtrpc.cli.watch import add_watch_options, level_of, print_summary, printer
from pyvirtrpc.client import Connection, Domain, open_connection
from pyvirtrpc.errors import Error
from pyvirtrpc.gen import mockctl
from pyvirtrpc.gen.mockctl import Procedure as M
from pyvirtrpc.scaled import parse_scaled
from pyvirtrpc.server import serve_unix
from pyvirtrpc.watch import (
    Extender,
    MiB,
    Report,
    Watcher,
    command_extender,
    format_size,
    mock_grow,
    serves_mockctl,
    thin_disks,
)

DEMO_DOMAIN = "pyvirtrpc-demo"
TRUNCATE = 'truncate -s "$NEW_PHYSICAL" "$DISK_PATH"'
QEMU_IMAGE_SIZE = 256 * MiB
MOCK_DEVICE_SIZE = 64 * MiB

DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>{emulator}
    <disk type='{kind}' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source {source}/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def thin_domain_xml(name: str, image: str | None = None, emulator: str | None = None) -> str:
    """A domain with a qcow2 disk ``vda``: on a block device (for the mock), or in the
    file ``image`` (for qemu, run as ``emulator``)."""
    return DOMAIN_XML.format(
        name=name,
        emulator=f"\n    <emulator>{emulator}</emulator>" if emulator else "",
        kind="file" if image else "block",
        source=f"file='{image}'" if image else f"dev='/dev/demo-vg/{name}'",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="watch a thin disk being grown as its guest writes (a few seconds)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connect(parser, "a libvirtd with qemu, or a running pyvirtrpc mock (default: a mock "
                "libvirtd in this process; LIBVIRT_DEFAULT_URI is not used)")
    parser.add_argument("--domain", metavar="NAME",
                        help="with --connect: a running domain to write to, instead of a new one")
    add_watch_options(parser, margin="16MiB", chunk="32MiB")
    parser.add_argument("--extensions", type=int, default=4, metavar="N",
                        help="stop once the disk has been grown N times (default 4)")
    parser.add_argument("--write", type=parse_scaled, default=8 * MiB, metavar="SIZE",
                        help="size of each guest write (default 8MiB)")
    parser.add_argument("--offset", type=parse_scaled, default=0, metavar="SIZE",
                        help="guest offset of the first write (default 0)")
    parser.add_argument("--pace", type=float, default=0.1, metavar="SECONDS",
                        help="time between two guest writes (default 0.1)")
    parser.set_defaults(func=run)


@dataclass
class Guest:
    """The domain whose guest writes, and how it writes."""

    name: str
    dev: str = "vda"
    device: str = ""  # qemu: the QOM path of the disk's block backend, for qemu-io
    mock: bool = True
    transient: bool = True
    folder: Path | None = None

    async def write(self, conn: Connection, domain: Domain, offset: int, length: int) -> str:
        """The guest writes; returns what followed, for the report."""
        if self.mock:
            info = (await conn.call(
                mockctl.PROCEDURES[M.DISK_WRITE],
                mockctl.DiskWriteArgs(self.name, self.dev, offset, length))).info
            return (f"allocation {format_size(info.allocation)} of "
                    f"{format_size(info.physical)}")
        command = f'qemu-io -d {self.device} "write -P 0x5a {offset} {length}"'
        out = await domain.qemu_monitor_command(command, hmp=True)
        if out.strip():
            raise Error(f"qemu-io: {out.strip()}")
        return "through the qemu monitor"


def run(args: argparse.Namespace) -> int:
    return trio.run(_main, args)


async def _main(args: argparse.Namespace) -> int:
    if args.connect is not None:
        try:
            return await _demo(args.connect, args)
        except (Error, OSError, ValueError, subprocess.CalledProcessError) as exc:
            error(exc)
            return 1
    with tempfile.TemporaryDirectory(prefix="pyvirtrpc-demo-") as folder:
        socket = Path(folder, "libvirt-sock")
        hypervisor = MockHypervisor(test_domain=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, MockBackend(hypervisor), socket))
            say(args, f"a mock libvirtd listens on {socket} (in this process)")
            try:
                status = await _demo(f"test+unix:///default?socket={socket}", args)
            except (Error, OSError, ValueError) as exc:
                error(exc)
                status = 1
            nursery.cancel_scope.cancel()
    return status


def say(args: argparse.Namespace, message: str, kind: str = "demo") -> None:
    printer(args.json)(Report(kind, message))


async def _demo(uri: str, args: argparse.Namespace) -> int:
    async with open_connection(uri) as conn:
        if await serves_mockctl(conn):
            guest = Guest(args.domain or DEMO_DOMAIN)
            extend: Extender = mock_grow
        elif await conn.get_type() == "QEMU":
            guest = Guest(args.domain or DEMO_DOMAIN, mock=False, transient=not args.domain)
            extend = command_extender(args.extend or TRUNCATE, args.extend_timeout)
        else:
            raise ValueError(f"{uri}: the demo needs pyvirtrpc's mock or a libvirtd with the "
                             "qemu driver (guests that write)")
        if args.extend and guest.mock:
            extend = command_extender(args.extend, args.extend_timeout)
        armed, done = trio.Event(), trio.Event()

        def show(report: Report) -> None:
            printer(args.json)(report)
            if report.domain != guest.name:
                return
            if report.kind in ("armed", "polling"):
                armed.set()
            if report.kind == "extended" and report.data["extensions"] >= args.extensions:
                done.set()

        watcher = Watcher(uri, level=level_of(args), extend=extend, chunk=args.chunk,
                          poll_interval=args.poll_interval, domains={guest.name}, report=show)
        failure: Exception | None = None  # raised outside the nursery (no exception group)
        domain: Domain | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            try:
                domain = await _start(conn, guest, args)
                with trio.fail_after(30):
                    await armed.wait()
                wrote = await _write(conn, domain, guest, args, done, watcher)
                with trio.move_on_after(5):
                    await done.wait()
                await trio.sleep(0.2)  # the last re-arm
            except trio.TooSlowError:
                failure = Error("the watcher did not arm the disk within 30 s")
            except (Error, OSError, ValueError, subprocess.CalledProcessError) as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await _stop(domain, guest)
        if failure is not None:
            raise failure
    print_summary(watcher, args.json)
    disks = [d for d in watcher.summary() if d.domain == guest.name]
    grown = sum(d.extensions for d in disks)
    failed = sum(d.failures for d in disks)
    say(args, f"the guest wrote {format_size(wrote)}; the watcher grew its disk {grown} "
        f"time{'' if grown == 1 else 's'}, {failed} failed", "done")
    return 0 if grown >= args.extensions and not failed else 1


async def _start(conn: Connection, guest: Guest, args: argparse.Namespace) -> Domain:
    """Start the demo's domain (after the watcher, which sees it start), or find it."""
    if guest.mock:
        domain = await conn.create_domain(thin_domain_xml(guest.name))
        await conn.call(mockctl.PROCEDURES[M.DISK_GROW],
                        mockctl.DiskGrowArgs(guest.name, guest.dev, MOCK_DEVICE_SIZE))
        say(args, f"started domain {guest.name}: a qcow2 disk on a "
            f"{format_size(MOCK_DEVICE_SIZE)} block device")
        return domain
    if not guest.transient:
        domain = await conn.lookup_domain(guest.name)
        xml = await domain.xml_desc()
        guest.dev = thin_disks(xml)[0][0] if thin_disks(xml) else "vda"
        guest.device = _qom_path(xml, guest.dev)
        return domain
    guest.folder = Path(tempfile.mkdtemp(prefix="pyvirtrpc-demo-"))
    image = guest.folder / "thin.qcow2"
    qemu_img, emulator = shutil.which("qemu-img"), shutil.which("qemu-system-x86_64")
    if qemu_img is None or emulator is None:
        raise ValueError("the qemu demo needs qemu-img and qemu-system-x86_64 on this host")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(image),
                    str(QEMU_IMAGE_SIZE)], check=True)
    _give_to_daemon(conn, guest.folder)
    domain = await conn.create_domain(thin_domain_xml(guest.name, str(image), emulator))
    guest.device = _qom_path(await domain.xml_desc(), guest.dev)
    say(args, f"started domain {guest.name} (qemu, no OS) on {image}, a new "
        f"{format_size(QEMU_IMAGE_SIZE)} qcow2 image")
    return domain


def _give_to_daemon(conn: Connection, folder: Path) -> None:
    """As root, give the image to the user the daemon runs as (its socket's owner)."""
    folder.chmod(0o755)
    socket = conn.target.socket
    if os.geteuid() != 0 or socket is None:
        return
    owner = os.stat(socket)
    for path in (folder, *folder.iterdir()):
        os.chown(path, owner.st_uid, owner.st_gid)


def _qom_path(xml: str, dev: str) -> str:
    """The block backend of a virtio disk, as HMP qemu-io -d names it."""
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        target, alias = disk.find("target"), disk.find("alias")
        if target is not None and target.get("dev") == dev and alias is not None:
            return f"/machine/peripheral/{alias.get('name')}/virtio-backend"
    raise ValueError(f"no alias for disk {dev} in the live XML (is the domain running?)")


async def _write(conn: Connection, domain: Domain, guest: Guest, args: argparse.Namespace,
                 done: trio.Event, watcher: Watcher) -> int:
    """Guest writes, each to new space, until the watcher is done (or the disk is full).

    A write waits while an extension is under way (the threshold fired and is not armed
    again), so that the guest never outruns the watcher, however slow the machine.
    """
    capacity = (await domain.block_info(guest.dev)).capacity
    offset, wrote = args.offset, 0
    while not done.is_set() and offset + args.write <= capacity:
        with trio.move_on_after(10):
            while any(d.active and d.armed is None and d.mode == "event"
                      for d in watcher.summary()):
                await trio.sleep(0.01)
        after = await guest.write(conn, domain, offset, args.write)
        wrote += args.write
        printer(args.json)(Report(
            "write", f"the guest wrote {format_size(args.write)} at {format_size(offset)}: "
            f"{after}", guest.name, guest.dev, {"offset": offset, "length": args.write}))
        offset += args.write
        await trio.sleep(args.pace)
    return wrote


async def _stop(domain: Domain | None, guest: Guest) -> None:
    if guest.transient and domain is not None:
        with contextlib.suppress(Error):
            await domain.destroy()
    if guest.folder is not None:
        shutil.rmtree(guest.folder, ignore_errors=True)

