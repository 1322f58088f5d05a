"""The relay in front of a real qemu-session libvirtd: the block-threshold event from qemu,
through libvirtd and the relay, to ``virsh event``; volume upload and download (streams in
both directions, sparse ones too) through the relay.

Everything a test does goes through the relay (the command, in its own process) except
what it compares against: a second ``virsh event`` straight on libvirtd, the files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mockdaemons import VirshEvents, wait_for
from realdaemons import QEMU_USER, LibvirtdQemuSession, virsh
from relays import RelayProcess, relay_factory

__all__ = ["relay_factory"]

pytestmark = [pytest.mark.libvirtd, pytest.mark.qemu]

Relay = Callable[..., RelayProcess]
MiB = 2**20


def domstats_block(uri: str, name: str) -> dict[str, str]:
    out = virsh(uri, "domstats", "--block", name).stdout
    return dict(re.findall(r"^\s+(block\.0\.\w+)=(.*)$", out, re.MULTILINE))


@pytest.fixture
def thin_domain(libvirtd_qemu: LibvirtdQemuSession, relay_factory: Relay, tmp_path: Path
                ) -> Iterator[tuple[RelayProcess, str, Path]]:
    """A relay to the qemu libvirtd, and a thin domain defined and started through it."""
    relay = relay_factory(libvirtd_qemu.uri)
    name = "relay-thin"
    xml, top = libvirtd_qemu.make_thin_domain(name)
    (tmp_path / "thin.xml").write_text(xml)
    virsh(relay.uri, "define", str(tmp_path / "thin.xml"))
    try:
        virsh(relay.uri, "start", name)
        yield relay, name, top
    finally:
        virsh(libvirtd_qemu.uri, "destroy", name, check=False)
        virsh(libvirtd_qemu.uri, "undefine", name, check=False)


def test_block_threshold_event_through_the_relay(
        libvirtd_qemu: LibvirtdQemuSession, thin_domain: tuple[RelayProcess, str, Path]) -> None:
    relay, name, top = thin_domain
    relayed = VirshEvents(relay.uri, "--event", "block-threshold")
    direct = VirshEvents(libvirtd_qemu.uri, "--event", "block-threshold")
    try:
        wait_for(lambda: any(r["procedure"] == "CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY"
                             for r in relay.audit()), "virsh event to register")
        direct.settle(1.0)  # no way to ask libvirtd: give virsh a moment
        before = domstats_block(relay.uri, name)
        assert before == domstats_block(libvirtd_qemu.uri, name)
        assert before["block.0.path"] == str(top)
        threshold = int(before["block.0.allocation"]) + MiB
        armed = virsh(relay.uri, "domblkthreshold", name, "vda", str(threshold))
        assert (armed.stdout, armed.stderr) == ("\n", "")
        assert domstats_block(relay.uri, name)["block.0.threshold"] == str(threshold)
        # a write through QEMU's program (qemu-monitor-command), through the relay
        libvirtd_qemu.hmp_write(name, "32M", "4M", uri=relay.uri)
        lines = sorted(relayed.expect(2))
        assert lines == sorted(direct.expect(2))
        allocation = int(domstats_block(relay.uri, name)["block.0.allocation"])
        e = int(lines[0].rsplit(" ", 1)[1])
        assert 0 < e <= 4 * MiB
        assert threshold + e <= allocation
        assert lines == [
            f"event 'block-threshold' for domain '{name}': dev: {dev}({top}) {threshold} {e}"
            for dev in ("vda", "vda[1]")
        ]
        assert "block.0.threshold" not in domstats_block(relay.uri, name)  # one-shot
        info = ["qemu-monitor-command", name, "--hmp", "info block"]
        assert virsh(relay.uri, *info).stdout == virsh(libvirtd_qemu.uri, *info).stdout
    finally:
        relayed.stop()
        direct.stop()
    procedures = [(r["procedure"], r["domain"], r["result"]) for r in relay.audit()]
    assert ("DOMAIN_SET_BLOCK_THRESHOLD", name, "ok") in procedures
    assert ("qemu:DOMAIN_MONITOR_COMMAND", name, "ok") in procedures


def test_volume_streams_both_ways_through_the_relay(
        libvirtd_qemu: LibvirtdQemuSession, relay_factory: Relay, tmp_path: Path) -> None:
    import pwd

    relay = relay_factory(libvirtd_qemu.uri)
    pool_dir = libvirtd_qemu.img_dir / "relay-pool"
    pool_dir.mkdir(exist_ok=True)
    user = pwd.getpwnam(QEMU_USER)
    os.chown(pool_dir, user.pw_uid, user.pw_gid)
    virsh(relay.uri, "pool-create-as", "relaypool", "dir", "--target", str(pool_dir))
    try:
        # several 256 KiB stream packets each way
        data = os.urandom(3 * MiB + 12345)
        (tmp_path / "up.bin").write_bytes(data)
        virsh(relay.uri, "vol-create-as", "relaypool", "blob", str(len(data)), "--format", "raw")
        virsh(relay.uri, "vol-upload", "blob", str(tmp_path / "up.bin"), "--pool", "relaypool")
        assert (pool_dir / "blob").read_bytes() == data
        virsh(relay.uri, "vol-download", "blob", str(tmp_path / "down.bin"), "--pool",
              "relaypool")
        assert (tmp_path / "down.bin").read_bytes() == data
        # sparse: holes travel as STREAM_HOLE packets, both ways
        sparse = tmp_path / "sparse.bin"
        with sparse.open("wb") as f:
            f.write(b"head" * 1024)
            f.seek(4 * MiB)
            f.write(b"tail" * 1024)
        size = sparse.stat().st_size
        virsh(relay.uri, "vol-create-as", "relaypool", "holes", str(size), "--allocation", "0",
              "--format", "raw")
        virsh(relay.uri, "vol-upload", "holes", str(sparse), "--pool", "relaypool", "--sparse")
        virsh(relay.uri, "vol-download", "holes", str(tmp_path / "back.bin"), "--pool",
              "relaypool", "--sparse")
        assert (tmp_path / "back.bin").read_bytes() == sparse.read_bytes()
        assert (pool_dir / "holes").read_bytes() == sparse.read_bytes()
        for path in (pool_dir / "holes", tmp_path / "back.bin"):  # the hole stayed a hole
            assert os.stat(path).st_blocks * 512 < MiB
    finally:
        virsh(libvirtd_qemu.uri, "pool-destroy", "relaypool", check=False)
    kinds = [r["procedure"] for r in relay.audit() if r["procedure"].startswith("STORAGE_VOL_")]
    assert kinds == ["STORAGE_VOL_UPLOAD", "STORAGE_VOL_DOWNLOAD"] * 2
