"""The mock hypervisor's model: thin disks, block thresholds, lifecycle, XML, monitor.

Expected values come from libvirt 9.0 (test driver and qemu driver) and qemu 7.2, as
observed with raw probes and virsh; the tests against the real programs are in
test_mock_virsh.py, test_mock_libvirt_python.py and test_mock_side_by_side.py.
"""

from __future__ import annotations

import json

import pytest

from pyvirtrpc.backends.mock import CLUSTER_SIZE, MockHypervisor, NoSpace, ThinDisk
from pyvirtrpc.backends.mock.disk import NEW_IMAGE_SIZE
from pyvirtrpc.backends.mock.domxml import parse_domain_xml
from pyvirtrpc.backends.mock.hypervisor import TEST_DOMAIN_XML, DomainState
from pyvirtrpc.backends.mock.monitor import monitor_command, parse_size
from pyvirtrpc.errors import RemoteError
from pyvirtrpc.events import (
    BlockThresholdEvent,
    Event,
    IoErrorEvent,
    IoErrorReasonEvent,
    LifecycleEvent,
)
from pyvirtrpc.typedparams import decode_params

MiB = 1 << 20
QOM = "/machine/peripheral/virtio-disk0/virtio-backend"

THIN_XML = """\
<domain type='qemu'>
  <name>thin1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='{kind}' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source {attr}='/img/top.qcow2'/>
      {backing}
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""
BACKING = ("<backingStore type='file'><format type='qcow2'/>"
           "<source file='/img/base.qcow2'/><backingStore/></backingStore>")


def thin_xml(kind: str = "file", backing: bool = False) -> str:
    return THIN_XML.format(kind=kind, attr="dev" if kind == "block" else "file",
                           backing=BACKING if backing else "")


class Recorder:
    def __init__(self, hypervisor: MockHypervisor) -> None:
        self.events: list[Event] = []
        hypervisor.subscribe(self.events.append)

    def take(self) -> list[Event]:
        events, self.events[:] = list(self.events), []
        return events


def lifecycles(events: list[Event]) -> list[tuple[str, int, int]]:
    return [(e.domain.name, e.event, e.detail) for e in events if isinstance(e, LifecycleEvent)]


def running_thin(kind: str = "file", backing: bool = False) -> tuple[MockHypervisor, Recorder]:
    hypervisor = MockHypervisor(default_capacity=64 * MiB)
    domain = hypervisor.define_xml(thin_xml(kind, backing))
    hypervisor.start(domain)
    return hypervisor, Recorder(hypervisor)


def error(call: object, *args: object) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


# ---------------------------------------------------------------------- thin disks


def test_new_clusters_are_appended_after_an_l2_table() -> None:
    disk = ThinDisk("vda", "/img", 2 << 30)
    assert (disk.allocation, disk.physical) == (NEW_IMAGE_SIZE, NEW_IMAGE_SIZE)
    result = disk.write(32 * MiB, 4 * MiB)
    assert disk.allocation == NEW_IMAGE_SIZE + CLUSTER_SIZE + 4 * MiB
    assert result.end == disk.allocation and result.allocated == CLUSTER_SIZE + 4 * MiB
    assert disk.physical == disk.allocation  # a file grows with it


def test_rewriting_allocated_clusters_allocates_nothing() -> None:
    disk = ThinDisk("vda", "/img", 2 << 30)
    disk.write(32 * MiB, 4 * MiB)
    before = disk.allocation
    result = disk.write(33 * MiB, 4096)
    assert disk.allocation == before and result.allocated == 0
    # the host offset of guest 33 MiB: after the metadata, the L2 table and 1 MiB of data
    assert result.end == NEW_IMAGE_SIZE + CLUSTER_SIZE + MiB + 4096


def test_partly_new_writes_and_new_l2_regions() -> None:
    disk = ThinDisk("vda", "/img", 2 << 30)
    disk.write(0, CLUSTER_SIZE)
    disk.write(CLUSTER_SIZE // 2, CLUSTER_SIZE)  # half old, half a new cluster
    assert disk.allocation == NEW_IMAGE_SIZE + 3 * CLUSTER_SIZE
    disk.write(1 << 30, 1)  # another 512 MiB region: another L2 table
    assert disk.allocation == NEW_IMAGE_SIZE + 5 * CLUSTER_SIZE
    assert (disk.wr_reqs, disk.wr_bytes) == (3, CLUSTER_SIZE + CLUSTER_SIZE + 1)


def test_writes_outside_the_disk_are_refused() -> None:
    disk = ThinDisk("vda", "/img", 64 * MiB)
    for offset, length in ((64 * MiB, 1), (63 * MiB, 2 * MiB), (-1, 1), (0, 0)):
        with pytest.raises(ValueError):
            disk.write(offset, length)
    assert disk.allocation == NEW_IMAGE_SIZE


def test_block_device_runs_out_of_space_and_grows() -> None:
    disk = ThinDisk("vda", "/dev/vg/lv", 1 << 30, grows=False, physical=2 * MiB)
    with pytest.raises(NoSpace):
        disk.write(0, 4 * MiB)
    assert disk.allocation == NEW_IMAGE_SIZE  # nothing changed
    with pytest.raises(ValueError):
        disk.grow(NEW_IMAGE_SIZE - 1)
    disk.grow(8 * MiB)
    disk.write(0, 4 * MiB)
    assert disk.physical == 8 * MiB


def test_threshold_is_one_shot_with_excess() -> None:
    disk = ThinDisk("vda", "/img", 1 << 30, threshold=MiB)
    assert disk.take_threshold(MiB) is None  # ending exactly at it does not pass it
    assert disk.take_threshold(MiB + 10) == (MiB, 10)
    assert disk.threshold == 0 and disk.take_threshold(2 * MiB) is None


# ---------------------------------------------------------------------- thresholds


def test_threshold_fires_twice_without_index() -> None:
    hypervisor, recorder = running_thin()
    domain = hypervisor.by_name("thin1")
    hypervisor.set_block_threshold(domain, "vda", 2 * MiB)
    assert decode_params(hypervisor.stats(domain, 32))["block.0.threshold"] == 2 * MiB
    result = hypervisor.write("thin1", "vda", 0, 4 * MiB)
    events = recorder.take()
    assert [(e.dev, e.path, e.threshold, e.excess) for e in events
            if isinstance(e, BlockThresholdEvent)] == [
        ("vda", "/img/top.qcow2", 2 * MiB, result.end - 2 * MiB),
        ("vda[1]", "/img/top.qcow2", 2 * MiB, result.end - 2 * MiB),
    ]
    assert "block.0.threshold" not in decode_params(hypervisor.stats(domain, 32))
    hypervisor.write("thin1", "vda", 8 * MiB, 4 * MiB)
    assert recorder.take() == []  # one-shot


def test_threshold_set_with_an_index_fires_only_the_indexed_event() -> None:
    hypervisor, recorder = running_thin()
    hypervisor.set_block_threshold(hypervisor.by_name("thin1"), "vda[1]", MiB)
    hypervisor.write("thin1", "vda", 0, 2 * MiB)
    assert [e.dev for e in recorder.take() if isinstance(e, BlockThresholdEvent)] == ["vda[1]"]


def test_threshold_not_passed_does_not_fire() -> None:
    hypervisor, recorder = running_thin()
    hypervisor.set_block_threshold(hypervisor.by_name("thin1"), "vda", 64 * MiB)
    hypervisor.write("thin1", "vda", 0, MiB)
    assert recorder.take() == []
    assert hypervisor.disk("thin1", "vda").threshold == 64 * MiB


def test_threshold_zero_clears_it() -> None:
    hypervisor, recorder = running_thin()
    domain = hypervisor.by_name("thin1")
    hypervisor.set_block_threshold(domain, "vda", MiB)
    hypervisor.set_block_threshold(domain, "vda", 0)
    hypervisor.write(domain, "vda", 0, 4 * MiB)
    assert recorder.take() == []


def test_threshold_percentage_mode() -> None:
    hypervisor, _ = running_thin()
    domain = hypervisor.by_name("thin1")
    hypervisor.set_block_threshold(domain, "vda", 50_000, 1)  # 50.000 %
    assert hypervisor.disk(domain, "vda").threshold == 32 * MiB
    hypervisor.set_block_threshold(domain, "vda", 100_000, 1)
    assert hypervisor.disk(domain, "vda").threshold == 64 * MiB
    failure = error(hypervisor.set_block_threshold, domain, "vda", 100_001, 1)
    assert (failure.code, failure.domain) == (8, 10)
    assert failure.message == "invalid argument: threshold percentage 100001 is above 100000 (100%)"


def test_threshold_errors_are_the_qemu_drivers() -> None:
    hypervisor, _ = running_thin(backing=True)
    domain = hypervisor.by_name("thin1")
    failure = error(hypervisor.set_block_threshold, domain, "vda", 1, 2)
    assert (failure.code, failure.domain, failure.message, failure.str1, failure.str2) == (
        8, 10, "unsupported flags (0x2) in function qemuDomainSetBlockThreshold",
        "qemuDomainSetBlockThreshold", "flags")
    for dev, message in [("vdz", "invalid argument: failed to find disk 'vdz'"),
                         ("vda[9]", "invalid argument: failed to find disk 'vda[9]'"),
                         ("vda[x", "invalid argument: failed to parse block device 'vda[x'")]:
        failure = error(hypervisor.set_block_threshold, domain, dev, 1)
        assert (failure.code, failure.domain, failure.message) == (8, 10, message)
    hypervisor.set_block_threshold(domain, "vda[2]", 1)  # the backing image exists
    hypervisor.destroy(domain)
    failure = error(hypervisor.set_block_threshold, domain, "vda", 1)
    assert (failure.code, failure.domain, failure.message) == (
        55, 20, "Requested operation is not valid: domain is not running")


def test_block_stats_with_backing_chain() -> None:
    hypervisor, _ = running_thin(backing=True)
    domain = hypervisor.by_name("thin1")
    stats = decode_params(hypervisor.stats(domain, 32, 1 << 30))
    assert stats["block.count"] == 2
    assert (stats["block.1.name"], stats["block.1.path"], stats["block.1.backingIndex"]) == (
        "vda", "/img/base.qcow2", 2)
    hypervisor.destroy(domain)
    stats = decode_params(hypervisor.stats(domain, 32))
    assert "block.0.backingIndex" not in stats and "block.0.wr.reqs" not in stats
    assert stats["block.0.capacity"] == 64 * MiB


def test_full_block_device_pauses_the_guest_until_grown_and_resumed() -> None:
    hypervisor, recorder = running_thin("block")
    domain = hypervisor.by_name("thin1")
    disk = hypervisor.disk(domain, "vda")
    disk.grow(4 * MiB)
    with pytest.raises(NoSpace):
        hypervisor.write(domain, "vda", 0, 8 * MiB)
    assert (domain.state, domain.reason) == (DomainState.PAUSED, 5)  # PAUSED_IOERROR
    events = recorder.take()
    assert [type(e) for e in events] == [IoErrorEvent, IoErrorReasonEvent, LifecycleEvent]
    reason = events[1]
    assert isinstance(reason, IoErrorReasonEvent)
    assert (reason.src_path, reason.dev_alias, reason.action, reason.reason) == (
        "/img/top.qcow2", "virtio-disk0", 1, "enospc")
    assert lifecycles(events) == [("thin1", 3, 2)]  # SUSPENDED, IOERROR
    hypervisor.grow(domain, "vda", 16 * MiB)
    hypervisor.resume(domain, "thin1")
    hypervisor.write(domain, "vda", 0, 8 * MiB)
    assert disk.physical == 16 * MiB


# ---------------------------------------------------------------------- lifecycle


def test_the_test_domain_starts_as_the_test_drivers() -> None:
    hypervisor = MockHypervisor()
    domain = hypervisor.by_name("test")
    assert (domain.id, domain.state, domain.reason, domain.persistent) == (
        1, DomainState.RUNNING, 0, True)
    assert domain.definition.format(domain.id) == TEST_DOMAIN_XML.replace(
        "<domain type='test'>", "<domain type='test' id='1'>")
    disk = hypervisor.disk("test", "vda")
    assert (disk.capacity, disk.allocation, disk.physical) == (
        1099506450432, 1099511627776, 1099511627776)


def test_lifecycle_events_and_states_as_the_test_driver() -> None:
    hypervisor = MockHypervisor()
    recorder = Recorder(hypervisor)
    domain = hypervisor.define_xml(thin_xml())
    hypervisor.define_xml(domain.config.format())  # with its uuid: an update
    hypervisor.start(domain)
    assert (domain.id, domain.reason) == (2, 1)
    hypervisor.suspend(domain, "thin1")
    hypervisor.resume(domain, "thin1")
    hypervisor.reboot(domain)  # on_reboot restart: no event, booted again
    assert (domain.state, domain.reason) == (DomainState.RUNNING, 1)
    hypervisor.shutdown(domain, "thin1")
    assert (domain.state, domain.reason, domain.id) == (DomainState.SHUTOFF, 1, -1)
    hypervisor.start(domain)
    hypervisor.destroy(domain)
    assert domain.reason == 2
    hypervisor.undefine(domain)
    assert lifecycles(recorder.take()) == [
        ("thin1", 0, 0), ("thin1", 0, 1), ("thin1", 2, 0), ("thin1", 3, 0), ("thin1", 4, 0),
        ("thin1", 5, 0), ("thin1", 2, 0), ("thin1", 5, 1), ("thin1", 1, 0),
    ]
    assert [d.name for d in hypervisor] == ["test"]


def test_undefining_a_running_domain_makes_it_transient() -> None:
    hypervisor = MockHypervisor()
    domain = hypervisor.by_name("test")
    hypervisor.undefine(domain)
    assert not domain.persistent and domain.active
    hypervisor.destroy(domain)
    assert list(hypervisor) == []


def test_redefining_a_running_domain_waits_for_its_stop() -> None:
    hypervisor = MockHypervisor()
    domain = hypervisor.by_name("test")
    small = TEST_DOMAIN_XML.replace("8388608", "1024")
    hypervisor.define_xml(small)
    assert domain.definition.max_memory == 8388608 and domain.config.max_memory == 1024
    hypervisor.destroy(domain)
    assert domain.definition.max_memory == 1024


def test_errors_as_the_test_driver_gives_them() -> None:
    hypervisor = MockHypervisor()
    domain = hypervisor.by_name("test")
    failure = error(hypervisor.resume, domain, "test")
    assert (failure.code, failure.domain, failure.message) == (
        1, 12, "internal error: domain 'test' not paused")
    failure = error(hypervisor.start, domain)
    assert failure.message == "internal error: Domain 'test' is already running"
    hypervisor.suspend(domain, "test")
    assert error(hypervisor.suspend, domain, "test").message == (
        "internal error: domain 'test' not running")
    hypervisor.destroy(domain)
    failure = error(hypervisor.destroy, domain)
    assert (failure.code, failure.domain, failure.message) == (
        55, 20, "Requested operation is not valid: domain is not running")
    assert error(hypervisor.shutdown, domain, "test").message == (
        "internal error: domain 'test' not running")
    failure = error(hypervisor.shutdown, domain, "test", 1)
    assert (failure.code, failure.domain, failure.message, failure.int1) == (
        8, 12, "unsupported flags (0x1) in function testDomainShutdownFlags", 0)
    failure = error(hypervisor.by_name, "nope")
    assert (failure.code, failure.domain, failure.message, failure.str2) == (
        42, 12, "Domain not found", None)


def test_define_checks_as_libvirt() -> None:
    hypervisor = MockHypervisor()
    base = ("<domain type='test'><name>{}</name>{}<memory>1024</memory>"
            "<os><type>hvm</type></os></domain>")
    other_uuid = "<uuid>11111111-2222-3333-4444-555555555555</uuid>"
    test_uuid = "<uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>"
    cases = [
        (base.format("test", other_uuid), 9, 20,
         "operation failed: domain 'test' already exists with uuid "
         "6695eb01-f6a4-8304-79aa-97f2502e193f"),
        (base.format("other", test_uuid), 9, 20,
         "operation failed: domain 'test' is already defined with uuid "
         "6695eb01-f6a4-8304-79aa-97f2502e193f"),
        ("<foo/>", 27, 5, "XML error: expecting root element of 'domain', not 'foo'"),
        ("<domain type='test'/>", 21, 20, "missing name information"),
        ("<domain type='test'><name>a</name></domain>", 27, 20,
         "XML error: an os <type> must be specified"),
        (base.format("c", "<uuid>zz</uuid>"), 1, 20, "internal error: malformed uuid element"),
        (base.format("bad\nname", ""), 35, 5, "invalid char in name: \n"),
    ]
    for xml, code, domain, message in cases:
        failure = error(hypervisor.define_xml, xml)
        assert (failure.code, failure.domain, failure.message) == (code, domain, message), xml
    assert error(hypervisor.define_xml, "<domain").code == 35


def test_listing_filters() -> None:
    hypervisor = MockHypervisor()
    hypervisor.define_xml(thin_xml())
    names = {flags: [d.name for d in hypervisor.list_domains(flags)]
             for flags in (0, 1, 2, 3, 16, 64, 1 | 64, 4, 8, 1024, 2048)}
    assert names == {0: ["test", "thin1"], 1: ["test"], 2: ["thin1"], 3: ["test", "thin1"],
                     16: ["test"], 64: ["thin1"], 1 | 64: [], 4: ["test", "thin1"], 8: [],
                     1024: [], 2048: ["test", "thin1"]}
    assert error(hypervisor.list_domains, 1 << 20).message == (
        "unsupported flags (0x100000) in function testConnectListAllDomains")


def test_all_stats_flags_and_groups() -> None:
    hypervisor = MockHypervisor()
    ((domain, params),) = hypervisor.all_stats(None, 1, 0)
    assert domain.name == "test"
    assert decode_params(params) == {"state.state": 1, "state.reason": 0}
    failure = error(hypervisor.all_stats, None, 4, 1 << 31)
    assert (failure.code, failure.domain, failure.message) == (
        74, 12, "argument unsupported: Stats types bits 0x4 are not supported by this daemon")
    assert error(hypervisor.all_stats, None, 0, 1 << 28).message == (
        "unsupported flags (0x10000000) in function testConnectGetAllDomainStats")
    assert hypervisor.all_stats(None, 1, 64) == []  # only shut off domains: none


# ---------------------------------------------------------------------- XML


def test_unknown_elements_and_namespaces_are_kept() -> None:
    xml = ("<domain type='kvm' xmlns:q='http://q/'><name>a&amp;b</name>"
           "<os><type>hvm</type></os><metadata><app:x xmlns:app='http://app/1' a=\"x'y\">"
           "text</app:x></metadata><weird>keep</weird><q:commandline/></domain>")
    definition = parse_domain_xml(xml)
    text = definition.format(3)
    assert text.startswith("<domain type='kvm' id='3'>\n  <name>a&amp;b</name>\n  <uuid>")
    assert "    <app:x xmlns:app='http://app/1' a='x&apos;y'>text</app:x>\n" in text
    assert "  <weird>keep</weird>\n" in text
    assert "  <q:commandline xmlns:q='http://q/'/>\n" in text
    assert parse_domain_xml(text.replace(" id='3'", "")).format() == text.replace(" id='3'", "")


def test_memory_units() -> None:
    definition = parse_domain_xml(thin_xml())
    assert (definition.max_memory, definition.current_memory, definition.vcpus) == (
        65536, 65536, 1)


# ---------------------------------------------------------------------- monitor


def test_hmp_qemu_io_write_is_a_guest_write() -> None:
    hypervisor, recorder = running_thin()
    domain = hypervisor.by_name("thin1")
    hypervisor.set_block_threshold(domain, "vda", MiB)
    command = f'qemu-io -d {QOM} "write -P 0x5a 32M 4M"'
    assert monitor_command(hypervisor, domain, command, hmp=True) == ""
    assert hypervisor.disk(domain, "vda").allocation == NEW_IMAGE_SIZE + CLUSTER_SIZE + 4 * MiB
    assert len(recorder.take()) == 2
    for other in ("qemu-io virtio-disk0 'write 0 4k'", "qemu-io libvirt-1-format 'write 0 1'"):
        assert monitor_command(hypervisor, domain, other, hmp=True) == ""
    assert hypervisor.disk(domain, "vda").wr_reqs == 3


def test_hmp_answers_as_qemu() -> None:
    hypervisor, _ = running_thin(backing=True)
    domain = hypervisor.by_name("thin1")
    assert monitor_command(hypervisor, domain, "info block", hmp=True) == (
        "libvirt-1-format: /img/top.qcow2 (qcow2)\r\n"
        f"    Attached to:      {QOM}\r\n"
        "    Cache mode:       writeback\r\n"
        "    Backing file:     /img/base.qcow2 (chain depth: 1)\r\n"
    )
    assert monitor_command(hypervisor, domain, 'qemu-io -d /nope "write 0 4k"', hmp=True) == (
        "Error: Device '/nope' not found\r\n")
    assert monitor_command(hypervisor, domain, "bogus", hmp=True) == "unknown command: 'bogus'\r\n"
    assert monitor_command(hypervisor, domain, "info blockx", hmp=True) == (
        "unknown command: 'info blockx'\r\n")
    assert monitor_command(hypervisor, domain, 'qemu-io "write 0 1"', hmp=True) == (
        'qemu-io: string expected\r\nTry "help qemu-io" for more information\r\n')
    # qemu-io's own failures are printed on qemu's stderr, not in the reply
    for bad in ("write 70M 1M", "bogus", "write x y"):
        assert monitor_command(hypervisor, domain, f'qemu-io -d {QOM} "{bad}"', hmp=True) == ""


def test_qmp_commands() -> None:
    hypervisor, _ = running_thin()
    domain = hypervisor.by_name("thin1")
    reply = json.loads(monitor_command(hypervisor, domain, '{"execute":"query-name"}', False))
    assert reply["return"] == {"name": "thin1"} and reply["id"].startswith("libvirt-")
    reply = json.loads(monitor_command(hypervisor, domain, '{"execute":"bogus"}', False))
    assert reply["error"] == {"class": "CommandNotFound",
                              "desc": "The command bogus has not been found"}
    hmp = ('{"execute":"human-monitor-command","arguments":'
           f'{{"command-line":"qemu-io -d {QOM} \\"write 0 64k\\""}}}}')
    assert json.loads(monitor_command(hypervisor, domain, hmp, False))["return"] == ""
    assert error(monitor_command, hypervisor, domain, "not json", False).code == 1


@pytest.mark.parametrize(("text", "value"), [("32M", 32 * MiB), ("4k", 4096), ("512", 512),
                                             ("1G", 1 << 30), ("1.5M", 3 * MiB // 2)])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value
