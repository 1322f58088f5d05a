"""The watcher against real libvirtd: polling where the test driver has no block thresholds,
and a real qcow2 image grown as real qemu writes to it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from realdaemons import THIN_DISK_QOM_PATH, LibvirtdQemuSession, LibvirtdTestDriver, tool
from watchreports import Reports

from pyvirtrpc import open_connection
from pyvirtrpc.watch import Level, Watcher, command_extender

pytestmark = pytest.mark.libvirtd

MiB = 2**20
# What libvirt's test driver says of every disk (testDomainGetBlockInfo).
TEST_CAPACITY, TEST_SIZE = 1099506450432, 1099511627776

THIN_TEST_XML = """\
<domain type='test'>
  <name>thin</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/guest/thin.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


async def test_polling_where_the_driver_has_no_block_threshold(
    libvirtd_test_factory: Callable[[], LibvirtdTestDriver], tmp_path: Path,
) -> None:
    daemon = libvirtd_test_factory()
    log = tmp_path / "extend.log"
    reports = Reports()
    watcher = Watcher(
        daemon.uri, level=Level(margin=1024 * MiB), poll_interval=0.2, report=reports.append,
        extend=command_extender(f'echo "$DOMAIN $DEV $DISK_PATH $THRESHOLD $EXCESS '
                                f'$CAPACITY $PHYSICAL $NEW_PHYSICAL" >> {log}'),
    )
    async with open_connection(daemon.uri) as conn, trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        assert watcher.disks == {}  # "test" has a raw disk: nothing thin to watch
        domain = await conn.create_domain(THIN_TEST_XML)  # starts after the watcher
        await reports.wait("polling")
        await reports.wait("failed", 3)
        nursery.cancel_scope.cancel()
        await domain.destroy()
    polling = reports.kinds("polling")[0]
    assert (polling.domain, polling.dev) == ("thin", "vdb")
    assert "this function is not supported by the connection driver: " \
        "virDomainSetBlockThreshold" in polling.message
    state = watcher.summary()[0]
    assert (state.mode, state.events, state.extensions) == ("poll", 0, 0)
    assert state.polls >= 2 and state.failures >= 3
    # The test driver's disk is always full (allocation = physical): every check finds it
    # past the level and runs the command, which cannot grow it.
    level = TEST_SIZE - 1024 * MiB
    expected = (f"thin vdb /guest/thin.qcow2 {level} {TEST_SIZE - level} {TEST_CAPACITY} "
                f"{TEST_SIZE} {TEST_SIZE + 1024 * MiB}")  # grown by the default chunk, 1 GiB
    lines = log.read_text().splitlines()
    assert len(lines) >= 3 and set(lines) == {expected}
    assert reports.kinds("failed")[0].message == (
        "the extension did not grow the disk (physical size still 1.0 TiB)")


def test_watch_command_needs_extend_on_a_real_daemon(libvirtd_test: LibvirtdTestDriver) -> None:
    done = subprocess.run([tool("pyvirtrpc"), "watch", "-c", libvirtd_test.uri],
                          capture_output=True, text=True, timeout=30)
    assert (done.stdout, done.returncode) == ("", 1)
    assert done.stderr == ("error: this daemon is not pyvirtrpc's mock: give --extend CMD, "
                           "the command that grows a disk\n")


@pytest.mark.qemu
async def test_real_image_grown_as_qemu_writes(libvirtd_qemu: LibvirtdQemuSession) -> None:
    """qemu writes through the monitor; the extension enlarges the overlay file (as an LV
    would be extended); libvirt reports the file's size as the physical size, and qemu
    goes on allocating in the grown file, past the old end."""
    xml, top = libvirtd_qemu.make_thin_domain("pyvirtrpc-watch-thin")
    reports = Reports()
    watcher = Watcher(
        libvirtd_qemu.uri, level=Level(margin=8 * MiB), chunk=16 * MiB,
        extend=command_extender('truncate -s "$NEW_PHYSICAL" "$DISK_PATH"'),
        domains={"pyvirtrpc-watch-thin"}, report=reports.append,
    )
    async with open_connection(libvirtd_qemu.uri) as conn:
        dom = await conn.define_domain(xml)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher.run)
                await dom.start()
                await reports.wait("armed")
                # A new overlay is 192 KiB: the first check grew it right away.
                assert reports.kinds("past") and watcher.summary()[0].extensions == 1
                offset = 0
                while watcher.summary()[0].extensions < 4:
                    assert offset < 64 * MiB, [r.text() for r in reports]
                    with trio.fail_after(30):  # qemu must not outrun the watcher here
                        while "block.0.threshold" not in await dom.stats(32):
                            await trio.sleep(0.01)
                    out = await dom.qemu_monitor_command(
                        f'qemu-io -d {THIN_DISK_QOM_PATH} "write -P 0x5a {offset} {4 * MiB}"',
                        hmp=True)
                    assert out.strip() == ""
                    offset += 4 * MiB
                await reports.wait("armed", 4)
                nursery.cancel_scope.cancel()
            info = await dom.block_info("vda")
            stats = await dom.stats(32)
        finally:
            with trio.CancelScope(shield=True):
                await dom.destroy()
                await dom.undefine()
    state = watcher.summary()[0]
    assert (state.mode, state.extensions, state.failures, state.events) == ("event", 4, 0, 3)
    size = os.stat(top).st_size
    assert size == info.physical == state.physical
    assert size == reports.kinds("watching")[0].data["physical"] + 4 * 16 * MiB
    armed = [r.data["threshold"] for r in reports.kinds("armed")]
    assert armed == sorted(set(armed)) and len(armed) == 4  # each one higher
    assert armed == [size - 8 * MiB - 16 * MiB * i for i in (3, 2, 1, 0)]
    # qemu allocated in the grown file: its highest offset is past the first sizes
    allocation = int(stats["block.0.allocation"])  # type: ignore[call-overload]
    assert allocation > armed[2] > size - 2 * 16 * MiB
    assert [r.data["threshold"] for r in reports.kinds("event")] == armed[:3]
