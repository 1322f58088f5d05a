"""The pytest plugin, as another project uses it: loaded by its entry point, in a fresh
pytest process run by pytester, with virsh, libvirt-python and pyvirtrpc as clients."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["pytester"]

OTHER_PROJECT = '''
import subprocess

import libvirt
import trio

import pyvirtrpc
from pyvirtrpc.events import BlockThresholdEvent, DomainEventID, LifecycleEvent


def test_virsh(mock_libvirtd):
    listed = subprocess.run(["virsh", "-c", mock_libvirtd.uri, "list", "--name"],
                            capture_output=True, text=True, check=True)
    assert listed.stdout == "test\\n\\n"
    readonly = subprocess.run(["virsh", "-c", mock_libvirtd.ro_uri, "suspend", "test"],
                              capture_output=True, text=True)
    assert "read only access prevents virDomainSuspend" in readonly.stderr
    assert mock_libvirtd.socket.endswith("libvirt-sock")


def test_libvirt_python_sees_guest_writes(mock_libvirtd):
    mock_libvirtd.start_thin_domain("vm1", physical=64 << 20)
    conn = libvirt.open(mock_libvirtd.uri)
    try:
        dom = conn.lookupByName("vm1")
        fresh = mock_libvirtd.disk("vm1", "vda").allocation  # a new qcow2's few clusters
        assert dom.blockInfo("vda") == [1 << 30, fresh, 64 << 20]
        mock_libvirtd.write("vm1", "vda", 0, 8 << 20)
        assert dom.blockInfo("vda")[1] == mock_libvirtd.disk("vm1", "vda").allocation
        mock_libvirtd.grow("vm1", "vda", 128 << 20)
        assert dom.blockInfo("vda")[2] == 128 << 20
    finally:
        conn.close()


def test_pyvirtrpc_gets_the_threshold_and_lifecycle_events(mock_libvirtd):
    mock_libvirtd.start_thin_domain("vm1")

    async def main():
        async with pyvirtrpc.open_connection(mock_libvirtd.uri) as conn:
            dom = await conn.lookup_domain("vm1")
            async with conn.domain_events(DomainEventID.BLOCK_THRESHOLD,
                                          DomainEventID.LIFECYCLE, domain=dom) as events:
                await dom.set_block_threshold("vda", 4 << 20)
                await trio.to_thread.run_sync(mock_libvirtd.write, "vm1", "vda", 0, 8 << 20)
                await trio.to_thread.run_sync(mock_libvirtd.suspend, "vm1")
                with trio.fail_after(10):
                    return [await events.receive() for _ in range(3)]

    first, second, third = trio.run(main)
    assert isinstance(first, BlockThresholdEvent) and first.dev == "vda"
    assert first.threshold == 4 << 20 and first.excess > 0
    assert isinstance(second, BlockThresholdEvent) and second.dev == "vda[1]"
    assert isinstance(third, LifecycleEvent) and (third.event, third.detail) == (3, 0)
'''


def test_registered_as_a_pytest11_entry_point() -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "pyvirtrpc"] == ["pyvirtrpc.pytest_plugin"]


@pytest.mark.libvirtd
def test_another_project_gets_a_mock_libvirtd(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_other_project=OTHER_PROJECT)
    # A new pytest process: the plugin comes from the installed entry point only.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # Turned off by its entry point name, the fixture is gone.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pyvirtrpc")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*fixture 'mock_libvirtd' not found*"])
