"""Real virsh against the mock libvirtd (in this process's thread, or the CLI's process).

virsh is the reference client: what it prints here is what it prints against libvirt's
own test driver (test_mock_side_by_side.py compares the two directly).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mockdaemons import THIN_XML, VirshEvents, mock_daemon, registrations, wait_for
from realdaemons import can_connect, virsh

from pyvirtrpc.backends.mock import MockDaemon
from pyvirtrpc.backends.mock.hypervisor import TEST_DOMAIN_XML

__all__ = ["mock_daemon"]

QOM = "/machine/peripheral/virtio-disk0/virtio-backend"
UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def out(daemon: MockDaemon, *args: str) -> str:
    return virsh(daemon.uri, *args).stdout


def test_list(mock_daemon: MockDaemon) -> None:
    assert out(mock_daemon, "list", "--all") == (
        " Id   Name   State\n"
        "----------------------\n"
        " 1    test   running\n\n"
    )


def test_dominfo(mock_daemon: MockDaemon) -> None:
    lines = out(mock_daemon, "dominfo", "test").splitlines()
    assert lines[6].startswith("CPU time:")  # the test driver reports the wall clock
    assert lines[:6] + lines[7:] == [
        "Id:             1",
        "Name:           test",
        f"UUID:           {UUID}",
        "OS Type:        linux",
        "State:          running",
        "CPU(s):         2",
        "Max memory:     8388608 KiB",
        "Used memory:    2097152 KiB",
        "Persistent:     yes",
        "Autostart:      disable",
        "Managed save:   no",
        "Security model: testSecurity",
        "Security DOI:   ",
        "Security label: libvirt-test (enforcing)",
        "",
    ]


def test_domstate_uuid_id(mock_daemon: MockDaemon) -> None:
    assert out(mock_daemon, "domstate", "test", "--reason") == "running (unknown)\n\n"
    assert out(mock_daemon, "domuuid", "test") == f"{UUID}\n\n"
    assert out(mock_daemon, "domid", "test") == "1\n\n"
    assert out(mock_daemon, "domname", UUID) == "test\n\n"
    assert out(mock_daemon, "domstate", "1") == "running\n\n"


def test_dumpxml(mock_daemon: MockDaemon) -> None:
    live = TEST_DOMAIN_XML.replace("<domain type='test'>", "<domain type='test' id='1'>")
    assert out(mock_daemon, "dumpxml", "test") == live + "\n"
    assert out(mock_daemon, "dumpxml", "--inactive", "test") == TEST_DOMAIN_XML + "\n"


def test_domblklist_domblkinfo(mock_daemon: MockDaemon) -> None:
    assert out(mock_daemon, "domblklist", "test") == (
        " Target   Source\n"
        "-----------------------------\n"
        " vda      /guest/diskimage1\n\n"
    )
    assert out(mock_daemon, "domblkinfo", "test", "vda") == (
        "Capacity:       1099506450432\n"
        "Allocation:     1099511627776\n"
        "Physical:       1099511627776\n\n"
    )


def test_domstats_state_and_block(mock_daemon: MockDaemon, tmp_path: Path) -> None:
    (tmp_path / "thin1.xml").write_text(THIN_XML.format(name="thin1"))
    virsh(mock_daemon.uri, "define", str(tmp_path / "thin1.xml"))
    virsh(mock_daemon.uri, "start", "thin1")
    assert out(mock_daemon, "domstats", "--state", "--block", "thin1") == (
        "Domain: 'thin1'\n"
        "  state.state=1\n"
        "  state.reason=1\n"
        "  block.count=1\n"
        "  block.0.name=vda\n"
        "  block.0.path=/img/thin1.qcow2\n"
        "  block.0.backingIndex=1\n"
        "  block.0.rd.reqs=0\n"
        "  block.0.rd.bytes=0\n"
        "  block.0.rd.times=0\n"
        "  block.0.wr.reqs=0\n"
        "  block.0.wr.bytes=0\n"
        "  block.0.wr.times=0\n"
        "  block.0.fl.reqs=0\n"
        "  block.0.fl.times=0\n"
        "  block.0.allocation=262144\n"
        "  block.0.capacity=1073741824\n"
        "  block.0.physical=262144\n\n"
    )
    both = out(mock_daemon, "domstats", "--state")
    assert both == ("Domain: 'test'\n  state.state=1\n  state.reason=0\n\n"
                    "Domain: 'thin1'\n  state.state=1\n  state.reason=1\n\n")


def test_lifecycle_events(mock_daemon: MockDaemon, tmp_path: Path) -> None:
    (tmp_path / "life.xml").write_text(THIN_XML.format(name="life"))
    watcher = VirshEvents(mock_daemon.uri, "--all")
    try:
        wait_for(lambda: registrations(mock_daemon) == 27, "virsh event to register")
        for command in (["define", str(tmp_path / "life.xml")], ["start", "life"],
                        ["suspend", "life"], ["resume", "life"], ["destroy", "life"],
                        ["undefine", "life"]):
            virsh(mock_daemon.uri, *command)
        assert watcher.expect(6) == [
            "event 'lifecycle' for domain 'life': Defined Added",
            "event 'lifecycle' for domain 'life': Started Booted",
            "event 'lifecycle' for domain 'life': Suspended Paused",
            "event 'lifecycle' for domain 'life': Resumed Unpaused",
            "event 'lifecycle' for domain 'life': Stopped Destroyed",
            "event 'lifecycle' for domain 'life': Undefined Removed",
        ]
    finally:
        watcher.stop()
    assert "life" not in out(mock_daemon, "list", "--all", "--name")


def test_errors(mock_daemon: MockDaemon) -> None:
    result = virsh(mock_daemon.uri, "suspend", "test", check=False)
    assert result.returncode == 0
    result = virsh(mock_daemon.uri, "suspend", "test", check=False)
    assert (result.returncode, result.stderr) == (
        1, "error: Failed to suspend domain 'test'\n"
           "error: internal error: domain 'test' not running\n")
    result = virsh(mock_daemon.uri, "dominfo", "nope", check=False)
    assert result.stderr == "error: failed to get domain 'nope'\n"


def test_block_threshold_event_from_a_monitor_write(mock_daemon: MockDaemon,
                                                     tmp_path: Path) -> None:
    (tmp_path / "thin1.xml").write_text(THIN_XML.format(name="thin1"))
    virsh(mock_daemon.uri, "define", str(tmp_path / "thin1.xml"))
    virsh(mock_daemon.uri, "start", "thin1")
    virsh(mock_daemon.uri, "domblkthreshold", "thin1", "vda", "1M")
    stats = out(mock_daemon, "domstats", "--block", "thin1")
    assert "  block.0.threshold=1048576\n" in stats
    watcher = VirshEvents(mock_daemon.uri, "--event", "block-threshold")
    try:
        wait_for(lambda: registrations(mock_daemon) == 1, "virsh event to register")
        result = virsh(mock_daemon.uri, "qemu-monitor-command", "thin1", "--hmp",
                       f'qemu-io -d {QOM} "write -P 0x5a 32M 4M"')
        assert result.stdout == "\n\n"  # qemu-io prints nothing (as with real qemu)
        # 4 metadata clusters, an L2 table, then 4 MiB of data: ends at 4521984
        assert watcher.expect(2) == [
            "event 'block-threshold' for domain 'thin1': dev: vda(/img/thin1.qcow2) "
            "1048576 3473408",
            "event 'block-threshold' for domain 'thin1': dev: vda[1](/img/thin1.qcow2) "
            "1048576 3473408",
        ]
    finally:
        watcher.stop()
    assert "threshold" not in out(mock_daemon, "domstats", "--block", "thin1")  # one-shot
    assert out(mock_daemon, "domblkinfo", "thin1", "vda") == (
        "Capacity:       1073741824\nAllocation:     4521984\nPhysical:       4521984\n\n")


def test_monitor_info_block(mock_daemon: MockDaemon) -> None:
    # virsh prints HMP replies with "\n" for qemu's "\r\n", as it does for real qemu
    assert out(mock_daemon, "qemu-monitor-command", "test", "--hmp", "info block") == (
        "libvirt-1-format: /guest/diskimage1 (raw)\n"
        f"    Attached to:      {QOM}\n"
        "    Cache mode:       writeback\n\n\n"
    )


def test_read_only_refuses_writes(mock_daemon: MockDaemon) -> None:
    for uri in (mock_daemon.ro_uri, mock_daemon.uri):  # the -ro socket, or the RO flag
        result = virsh(uri, "suspend", "test", readonly=True, check=False)
        assert (result.returncode, result.stderr) == (
            1, "error: Failed to suspend domain 'test'\n"
               "error: operation forbidden: read only access prevents virDomainSuspend\n")
    assert virsh(mock_daemon.ro_uri, "domstate", "test", readonly=True).stdout == "running\n\n"


# ---------------------------------------------------------------------- the CLI


def start_cli(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    sock = tmp_path / "mock.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvirtrpc", "mock", "--socket", str(sock),
         "--ro-socket", f"{sock}-ro"],
        stderr=subprocess.PIPE, text=True,
    )
    wait_for(lambda: can_connect(sock) or proc.poll() is not None, "the mock to listen")
    assert proc.poll() is None
    return proc, sock


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_cli_mock_and_mockctl(tmp_path: Path, stop: signal.Signals) -> None:
    proc, sock = start_cli(tmp_path)
    try:
        uri = f"test+unix:///default?socket={sock}"
        (tmp_path / "thin1.xml").write_text(THIN_XML.format(name="thin1"))
        virsh(uri, "define", str(tmp_path / "thin1.xml"))
        virsh(uri, "start", "thin1")
        virsh(uri, "domblkthreshold", "thin1", "vda", "2M")

        def mockctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "pyvirtrpc", "mockctl", "--socket",
                                   str(sock), *args], capture_output=True, text=True, check=False)

        result = mockctl("write", "thin1", "vda", "0", "4M")
        assert (result.returncode, result.stdout) == (0, (
            "capacity: 1073741824\nallocation: 4521984\nphysical: 4521984\nthreshold: 0\n"))
        result = mockctl("grow", "thin1", "vda", "1G")
        assert result.stdout.splitlines()[2] == "physical: 1073741824"
        result = mockctl("info", "thin1", "vda")
        assert result.stdout.splitlines()[1] == "allocation: 4521984"
        result = mockctl("write", "nope", "vda", "0", "1")
        assert (result.returncode, result.stderr) == (1, "error: Domain not found\n")
        result = mockctl("write", "thin1", "vda", "2G", "1")
        assert result.returncode == 1 and "outside the disk" in result.stderr
        assert "block.0.allocation=4521984" in virsh(uri, "domstats", "--block", "thin1").stdout
    finally:
        proc.send_signal(stop)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert f"listening on {sock}, {sock}-ro" in stderr
    assert not sock.exists() and not Path(f"{sock}-ro").exists()
    assert os.listdir(tmp_path) == ["thin1.xml"]
