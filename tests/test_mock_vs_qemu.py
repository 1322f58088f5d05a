"""One block-threshold scenario, driven the same way against real qemu and the mock.

virsh sets a threshold on a thin qcow2 overlay, a guest write comes in through qemu's
monitor (HMP ``qemu-io``, REAL-LIBVIRT.md section 2), and ``virsh event`` prints the
block-threshold events. qemu (through a session libvirtd) and the mock must print the same
events, the same ``excess`` included, and both must drop the threshold once it fired.
"""

from __future__ import annotations

import re
from pathlib import Path

from mockdaemons import VirshEvents, mock_daemon
from realdaemons import THIN_DISK_QOM_PATH, LibvirtdQemuSession, virsh

from pyvirtrpc.backends.mock import CLUSTER_SIZE, MockDaemon

__all__ = ["mock_daemon"]

EVENT = re.compile(r"^event 'block-threshold' for domain '(\w+)': dev: (\S+)\((.*)\) (\d+) (\d+)$")
THRESHOLD = 1 << 20


def scenario(uri: str, xml_path: Path, name: str) -> list[tuple[str, ...]]:
    """Define, start, set the threshold, write 4 MiB at 32 MiB; return the events."""
    virsh(uri, "define", str(xml_path))
    virsh(uri, "start", name, timeout=120)
    try:
        virsh(uri, "domblkthreshold", name, "vda", str(THRESHOLD))
        watcher = VirshEvents(uri, "--all", "--domain", name)
        try:
            seen = watcher.wait_listening(uri, name)
            command = f'qemu-io -d {THIN_DISK_QOM_PATH} "write -P 0x5a 32M 4M"'
            virsh(uri, "qemu-monitor-command", name, "--hmp", command)
            lines = watcher.expect(seen + 2, timeout=60)[seen:]
        finally:
            watcher.stop()
        stats = virsh(uri, "domstats", "--block", name).stdout
        assert "block.0.threshold" not in stats  # one-shot, in both
    finally:
        virsh(uri, "destroy", name, check=False, timeout=60)
        virsh(uri, "undefine", name, check=False, timeout=60)
    found = []
    for line in lines:
        match = EVENT.match(line)
        assert match is not None, line
        found.append(match.groups())
    return found


def test_block_threshold_from_a_monitor_write_qemu_and_mock(
        libvirtd_qemu: LibvirtdQemuSession, mock_daemon: MockDaemon, tmp_path: Path) -> None:
    xml, top = libvirtd_qemu.make_thin_domain("thinvs")
    xml_path = tmp_path / "thinvs.xml"
    xml_path.write_text(xml)
    qemu_events = scenario(libvirtd_qemu.uri, xml_path, "thinvs")
    mock_daemon.call(setattr, mock_daemon.hypervisor, "default_capacity", 64 << 20)
    mock_events = scenario(mock_daemon.uri, xml_path, "thinvs")
    assert [e[:4] for e in qemu_events] == [e[:4] for e in mock_events] == [
        ("thinvs", "vda", str(top), str(THRESHOLD)),
        ("thinvs", "vda[1]", str(top), str(THRESHOLD)),
    ]
    qemu_excess = {int(e[4]) for e in qemu_events}
    mock_excess = {int(e[4]) for e in mock_events}
    assert len(qemu_excess) == len(mock_excess) == 1  # both events carry the same excess
    # qemu 7.2: 4 clusters of a fresh overlay, an L2 table, then the 4 MiB: both end there
    assert qemu_excess == mock_excess == {4 * CLUSTER_SIZE + CLUSTER_SIZE + (4 << 20) - THRESHOLD}
