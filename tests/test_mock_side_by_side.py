"""The same virsh commands against libvirt's real test driver and against the mock.

A private test-driver libvirtd and a mock run side by side; each command runs against
both and must print the same (stdout, stderr, exit status). The only masked value is
``dominfo``'s CPU time, which the test driver takes from the wall clock.

The test driver forgets its state when its last connection closes, so a libvirt-python
connection stays open to each daemon while the commands run (the mock keeps its state
anyway). Commands whose answers differ by design are not compared: block thresholds
(the test driver has none) and the XML of domains defined here (the test driver rewrites
it with defaults; the mock keeps it as given).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from pathlib import Path

from mockdaemons import THIN_XML, VirshEvents, mock_daemon
from realdaemons import LibvirtdTestDriver, virsh

from pyvirtrpc.backends.mock import MockDaemon

__all__ = ["mock_daemon"]

CPU_TIME = re.compile(r"^CPU time:.*$", re.MULTILINE)


def domain_xml(name: str) -> str:
    """A domain both accept, with a fixed uuid (else each would pick its own)."""
    uuid = "d2a7a0e4-3c5e-4f55-9a57-0c1e2b3d4f5a"
    return THIN_XML.format(name=name).replace(
        f"<name>{name}</name>", f"<name>{name}</name>\n  <uuid>{uuid}</uuid>"
    )


def run(uri: str, args: list[str], readonly: bool = False) -> tuple[int, str, str]:
    result = virsh(uri, *args, readonly=readonly, check=False)
    return result.returncode, CPU_TIME.sub("CPU time: <masked>", result.stdout), result.stderr


def virsh_commands(xml: Path) -> list[list[str]]:
    """The commands compared (the relay's tests run them too); ``xml`` defines "sbs"."""
    return [
        ["list", "--all"],
        ["dominfo", "test"],
        ["domstate", "test", "--reason"],
        ["domuuid", "test"],
        ["domid", "test"],
        ["domname", "6695eb01-f6a4-8304-79aa-97f2502e193f"],
        ["dumpxml", "test"],
        ["dumpxml", "--inactive", "test"],
        ["domblklist", "test"],
        ["domblkinfo", "test", "vda"],
        ["domblkinfo", "test", "vdb"],
        ["domstats", "--state"],
        ["domstats", "--state", "test"],
        ["nodeinfo"],
        ["version"],
        ["hostname"],
        ["define", str(xml)],
        ["list", "--all"],
        ["list", "--inactive"],
        ["domstate", "sbs", "--reason"],
        ["dominfo", "sbs"],
        ["domblklist", "sbs"],
        ["start", "sbs"],
        ["start", "sbs"],
        ["domstate", "sbs", "--reason"],
        ["domid", "sbs"],
        ["suspend", "sbs"],
        ["suspend", "sbs"],
        ["domstate", "sbs", "--reason"],
        ["resume", "sbs"],
        ["resume", "sbs"],
        ["domstate", "sbs", "--reason"],
        ["reboot", "sbs"],
        ["domstate", "sbs", "--reason"],
        ["shutdown", "sbs"],
        ["domstate", "sbs", "--reason"],
        ["start", "sbs"],
        ["destroy", "sbs"],
        ["destroy", "sbs"],
        ["domstate", "sbs", "--reason"],
        ["list", "--all", "--name"],
        ["undefine", "sbs"],
        ["undefine", "sbs"],
        ["list", "--all"],
        ["dominfo", "nope"],
        ["domstate", "7"],
        ["shutdown", "test", "--mode", "acpi"],
    ]


def read_only_commands(xml: Path) -> list[list[str]]:
    """Commands compared on the read-only socket (refused, or not)."""
    return [["suspend", "test"], ["define", str(xml)], ["domstate", "test"]]


def test_virsh_prints_the_same(libvirtd_test_factory: Callable[[], LibvirtdTestDriver],
                               mock_daemon: MockDaemon, tmp_path: Path) -> None:
    import libvirt

    real = libvirtd_test_factory()
    xml = tmp_path / "sbs.xml"
    xml.write_text(domain_xml("sbs"))
    real_conn = libvirt.open(real.uri)  # keeps the test driver's state between commands
    try:
        for args in virsh_commands(xml):
            assert run(real.uri, args) == run(mock_daemon.uri, args), args
        for args in read_only_commands(xml):
            assert run(real.ro_uri, args, readonly=True) == run(
                mock_daemon.ro_uri, args, readonly=True), args
    finally:
        real_conn.close()
        del real_conn
        gc.collect()


def test_lifecycle_events_print_the_same(
        libvirtd_test_factory: Callable[[], LibvirtdTestDriver], mock_daemon: MockDaemon,
        tmp_path: Path) -> None:
    real = libvirtd_test_factory()
    xml = tmp_path / "ev.xml"
    xml.write_text(domain_xml("ev"))
    printed = []
    for uri in (real.uri, mock_daemon.uri):
        watcher = VirshEvents(uri, "--all")  # its connection also keeps the state
        try:
            seen = watcher.wait_listening(uri)
            for command in (["define", str(xml)], ["start", "ev"], ["suspend", "ev"],
                            ["resume", "ev"], ["suspend", "test"], ["resume", "test"],
                            ["shutdown", "ev"], ["start", "ev"], ["destroy", "ev"],
                            ["undefine", "ev"]):
                virsh(uri, *command)
            printed.append(watcher.expect(seen + 10)[seen:])
        finally:
            watcher.stop()
    assert printed[0] == printed[1]
    assert printed[1][0] == "event 'lifecycle' for domain 'ev': Defined Added"
