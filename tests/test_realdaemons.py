"""Smoke tests: the real-daemon fixtures give real peers that virsh (the reference) accepts."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from realdaemons import (
    THIN_DISK_QOM_PATH,
    LibvirtdQemuSession,
    LibvirtdTestDriver,
    can_connect,
    pid_alive,
    tool,
    virsh,
    virsh_env,
)

pytestmark = pytest.mark.libvirtd


def test_test_driver_lists_running_domain(libvirtd_test: LibvirtdTestDriver) -> None:
    print(f"libvirtd (test driver) started in {libvirtd_test.startup_seconds:.3f} s")
    out = virsh(libvirtd_test.uri, "list", "--all").stdout
    assert any(line.split()[1:] == ["test", "running"] for line in out.splitlines()[2:] if line)
    assert libvirtd_test.uri == f"test+unix:///default?socket={libvirtd_test.socket}"
    assert pid_alive(libvirtd_test.pid)
    assert libvirtd_test.log_path.parent == libvirtd_test.dir


def test_read_only_socket_refuses_suspend(libvirtd_test: LibvirtdTestDriver) -> None:
    result = virsh(libvirtd_test.ro_uri, "suspend", "test", readonly=True, check=False)
    assert result.returncode != 0
    assert "read only access prevents virDomainSuspend" in result.stderr
    # ... while the read-only socket still answers queries.
    assert "running" in virsh(libvirtd_test.ro_uri, "domstate", "test", readonly=True).stdout


def test_factory_daemon_kill_and_restart(
    libvirtd_test_factory: Callable[[], LibvirtdTestDriver],
    libvirtd_test: LibvirtdTestDriver,
) -> None:
    daemon = libvirtd_test_factory()
    assert daemon.dir != libvirtd_test.dir
    first_pid = daemon.pid
    daemon.kill()
    assert not daemon.running
    assert not pid_alive(first_pid)
    assert not can_connect(daemon.socket)
    assert virsh(daemon.uri, "list", check=False).returncode != 0

    started = time.monotonic()
    daemon.restart()
    print(f"restart after SIGKILL took {time.monotonic() - started:.3f} s")
    assert daemon.pid != first_pid
    assert "running" in virsh(daemon.uri, "domstate", "test").stdout
    # The shared daemon was not disturbed.
    assert "running" in virsh(libvirtd_test.uri, "domstate", "test").stdout


@pytest.mark.qemu
def test_qemu_block_threshold_event(libvirtd_qemu: LibvirtdQemuSession, tmp_path: Path) -> None:
    print(f"session libvirtd (qemu) started in {libvirtd_qemu.startup_seconds:.3f} s")
    uri = libvirtd_qemu.uri
    xml, top = libvirtd_qemu.make_thin_domain("thin1")
    assert top.parent.parent == libvirtd_qemu.img_dir
    xml_path = tmp_path / "thin1.xml"
    xml_path.write_text(xml)
    virsh(uri, "define", str(xml_path))
    started = time.monotonic()
    virsh(uri, "start", "thin1")
    print(f"domain start took {time.monotonic() - started:.3f} s")
    virsh(uri, "domblkthreshold", "thin1", "vda", "20M")
    assert "block.0.threshold=20971520" in virsh(uri, "domstats", "--block", "thin1").stdout

    events_path = tmp_path / "events.txt"
    with events_path.open("w") as events_out:
        watcher = subprocess.Popen(
            [tool("virsh"), "-c", uri, "event", "--event", "block-threshold", "--timeout", "20"],
            stdout=events_out,
            stderr=subprocess.STDOUT,
            env=virsh_env(),
        )
    expected = "event 'block-threshold' for domain 'thin1': dev: vda("
    try:
        time.sleep(1.0)  # let virsh register for the event before qemu writes
        # The threshold compares the overlay's *host* offset, which grows by about 4 MiB per
        # 4 MiB written to fresh clusters: it takes five such writes to pass 20 MiB.
        for offset_mib in range(32, 64, 4):
            libvirtd_qemu.hmp_write("thin1", f"{offset_mib}M", "4M")
            if watcher.poll() is not None or expected in events_path.read_text():
                break
        watcher.wait(timeout=25)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    output = events_path.read_text()
    assert expected in output, output
    assert f"dev: vda({top}) 20971520 " in output
    assert "events received: 1" in output
    # One-shot: the threshold is gone once it fired.
    assert "block.0.threshold" not in virsh(uri, "domstats", "--block", "thin1").stdout

    # hmp_write's QOM path names the real disk: a wrong one is reported (as output, exit 0).
    assert THIN_DISK_QOM_PATH == "/machine/peripheral/virtio-disk0/virtio-backend"
    bad = virsh(
        uri,
        "qemu-monitor-command",
        "thin1",
        "--hmp",
        'qemu-io -d /machine/peripheral/nonexistent/virtio-backend "read 0 4k"',
    )
    assert "not found" in bad.stdout


def test_missing_daemon_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    import realdaemons

    monkeypatch.setattr(realdaemons, "find_tool", lambda name: None)
    daemon = LibvirtdTestDriver()
    with pytest.raises(pytest.fail.Exception, match="missing real-peer tools: libvirtd"):
        realdaemons._started(daemon)
    assert not daemon.dir.exists()
