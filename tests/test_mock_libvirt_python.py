"""libvirt-python (the C library) against the mock libvirtd, with its default event loop."""

from __future__ import annotations

import gc
import queue
from typing import Any

import pytest
from mockdaemons import THIN_XML, libvirt_events, mock_daemon, registrations, wait_for

from pyvirtrpc.backends.mock import MockDaemon
from pyvirtrpc.backends.mock.hypervisor import TEST_DOMAIN_XML

__all__ = ["libvirt_events", "mock_daemon"]

MiB = 1 << 20
QOM = "/machine/peripheral/virtio-disk0/virtio-backend"


@pytest.fixture
def conn(libvirt_events: Any, mock_daemon: MockDaemon) -> Any:
    connection = libvirt_events.open(mock_daemon.uri)
    yield connection
    connection.close()
    gc.collect()  # free libvirt objects in this thread (see MockDaemon's docstring)


def test_open_list_and_look(conn: Any, mock_daemon: MockDaemon) -> None:
    import libvirt

    assert [d.name() for d in conn.listAllDomains()] == ["test"]
    assert conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE) == []
    assert (conn.getType(), conn.getURI()) == ("TEST", mock_daemon.uri)
    dom = conn.lookupByName("test")
    state, max_mem, mem, vcpus, _ = dom.info()
    assert (state, max_mem, mem, vcpus) == (libvirt.VIR_DOMAIN_RUNNING, 8388608, 2097152, 2)
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNKNOWN]
    assert dom.UUIDString() == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert conn.lookupByID(1).name() == conn.lookupByUUIDString(dom.UUIDString()).name() == "test"
    assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == TEST_DOMAIN_XML
    assert dom.blockInfo("vda") == [1099506450432, 1099511627776, 1099511627776]
    with pytest.raises(libvirt.libvirtError) as error:
        conn.lookupByName("nope")
    assert (error.value.get_error_code(), error.value.get_error_domain()) == (
        libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_TEST)


def test_block_threshold_and_lifecycle_events(conn: Any, mock_daemon: MockDaemon) -> None:
    import libvirt
    import libvirt_qemu

    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        lambda c, d, event, detail, opaque: events.put(("lifecycle", d.name(), event, detail)),
        None,
    )
    conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD,
        lambda c, d, dev, path, threshold, excess, opaque: events.put(
            ("threshold", d.name(), dev, path, threshold, excess)),
        None,
    )
    wait_for(lambda: registrations(mock_daemon) == 2, "the registrations")
    dom = conn.defineXML(THIN_XML.format(name="thin1"))
    dom.create()
    dom.setBlockThreshold("vda", MiB)
    hmp = libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    command = f'qemu-io -d {QOM} "write -P 0x5a 32M 4M"'
    assert libvirt_qemu.qemuMonitorCommand(dom, command, hmp) == ""
    got = [events.get(timeout=10) for _ in range(4)]
    excess = 4521984 - MiB
    assert got == [
        ("lifecycle", "thin1", libvirt.VIR_DOMAIN_EVENT_DEFINED,
         libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED),
        ("lifecycle", "thin1", libvirt.VIR_DOMAIN_EVENT_STARTED,
         libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED),
        ("threshold", "thin1", "vda", "/img/thin1.qcow2", MiB, excess),
        ("threshold", "thin1", "vda[1]", "/img/thin1.qcow2", MiB, excess),
    ]
    # re-armed with an index: one event; driven from Python in the daemon's thread
    dom.setBlockThreshold("vda[1]", 8 * MiB)
    mock_daemon.call(mock_daemon.hypervisor.write, "thin1", "vda", 40 * MiB, 8 * MiB)
    end = 4521984 + 8 * MiB  # appended after the first write's clusters
    assert events.get(timeout=10) == (
        "threshold", "thin1", "vda[1]", "/img/thin1.qcow2", 8 * MiB, end - 8 * MiB)
    with pytest.raises(queue.Empty):
        events.get(timeout=0.3)


def test_threshold_percentage_flag_and_refused_flags(conn: Any) -> None:
    import libvirt

    dom = conn.lookupByName("test")
    dom.setBlockThreshold("vda", 50_000, 1)  # 50 % of the capacity, in 1/1000 %
    ((_, stats),) = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_BLOCK)
    assert stats["block.0.threshold"] == 1099506450432 // 2
    with pytest.raises(libvirt.libvirtError) as error:
        dom.setBlockThreshold("vda", 1, 2)
    assert (error.value.get_error_code(), error.value.get_error_domain()) == (
        libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_QEMU)
    assert str(error.value) == "unsupported flags (0x2) in function qemuDomainSetBlockThreshold"


def test_get_all_domain_stats(conn: Any) -> None:
    import libvirt

    conn.defineXML(THIN_XML.format(name="off"))
    records = {d.name(): stats for d, stats in conn.getAllDomainStats(
        libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK)}
    assert records["test"]["state.state"] == libvirt.VIR_DOMAIN_RUNNING
    assert records["test"]["block.0.capacity"] == 1099506450432
    assert records["off"] == {
        "state.state": libvirt.VIR_DOMAIN_SHUTOFF, "state.reason": 0, "block.count": 1,
        "block.0.name": "vda", "block.0.path": "/img/off.qcow2", "block.0.allocation": 262144,
        "block.0.capacity": 1 << 30, "block.0.physical": 262144,
    }
    running = conn.getAllDomainStats(
        libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING)
    assert [d.name() for d, _ in running] == ["test"]
    listed = conn.domainListGetStats([conn.lookupByName("off")], libvirt.VIR_DOMAIN_STATS_STATE)
    assert [(d.name(), s) for d, s in listed] == [("off", {"state.state": 5, "state.reason": 0})]


def test_read_only_connection_is_refused_writes(libvirt_events: Any,
                                                 mock_daemon: MockDaemon) -> None:
    import libvirt

    conn = libvirt.openReadOnly(mock_daemon.ro_uri)
    try:
        dom = conn.lookupByName("test")
        with pytest.raises(libvirt.libvirtError) as error:
            dom.suspend()
        assert (error.value.get_error_code(), error.value.get_error_domain()) == (
            libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_DOMAIN)
        assert dom.isActive() == 1
    finally:
        conn.close()
