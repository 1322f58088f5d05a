"""The mock hypervisor: domains in memory, behaving as libvirt's test driver behaves.

It starts as ``test:///default`` does, with the running domain ``test`` (id 1), and
gives the test driver's answers, state reasons, lifecycle events and errors. On top of
the test driver it has thin disks (:mod:`.disk`), block thresholds as qemu and libvirt's
qemu driver implement them, and a qemu monitor (:mod:`.monitor`) that makes guests write.

Everything here runs in the server's thread; events go to every subscribed connection.
Drive it from Python with :meth:`MockHypervisor.write`, :meth:`MockHypervisor.grow`
and :meth:`MockHypervisor.disk` (from another thread, go through
:class:`pyvirtrpc.backends.mock.MockDaemon`).
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pyvirtrpc.backends.mock.disk import NEW_IMAGE_SIZE, NoSpace, ThinDisk, WriteResult
from pyvirtrpc.backends.mock.domxml import DomainXML, format_uuid, parse_domain_xml
from pyvirtrpc.errors import ErrorDomain, ErrorNumber, RemoteError
from pyvirtrpc.events import (
    BlockThresholdEvent,
    DomainLifecycle,
    Event,
    IoErrorEvent,
    IoErrorReasonEvent,
    LifecycleEvent,
)
from pyvirtrpc.gen.remote import NonnullDomain, TypedParam, TypedParamType
from pyvirtrpc.typedparams import TypedValue, encode_params

__all__ = [
    "DEFAULT_BLOCK_PHYSICAL",
    "DEFAULT_CAPACITY",
    "DomainState",
    "MockDomain",
    "MockHypervisor",
    "check_flags",
]

DEFAULT_CAPACITY = 1 << 30  # guest size of a disk defined without one known to the mock
DEFAULT_BLOCK_PHYSICAL = 128 << 20  # size of a block device (``<disk type='block'>``)
# The test driver's answers for the disk of its domain "test" (testDomainGetBlockInfo).
_TEST_DISK_CAPACITY = 1099506450432
_TEST_DISK_SIZE = 1099511627776
_PERCENT_SCALE = 100_000  # thresholds in percentage mode: thousandths of a percent

TEST_DOMAIN_XML = """\
<domain type='test'>
  <name>test</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <memory unit='KiB'>8388608</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='i686'>hvm</type>
    <boot dev='hd'/>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <source file='/guest/diskimage1'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </disk>
    <interface type='network'>
      <mac address='aa:bb:cc:dd:ee:ff'/>
      <source network='default'/>
      <target dev='testnet0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </interface>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </memballoon>
  </devices>
</domain>
"""
"""What ``virsh dumpxml --inactive test`` prints against libvirt 9.0's test driver."""


class DomainState(enum.IntEnum):
    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


# State reasons and event details used here (libvirt-domain.h).
RUNNING_UNKNOWN, RUNNING_BOOTED, RUNNING_UNPAUSED = 0, 1, 5
PAUSED_USER, PAUSED_IOERROR = 1, 5
SHUTOFF_SHUTDOWN, SHUTOFF_DESTROYED = 1, 2
DEFINED_ADDED, DEFINED_UPDATED = 0, 1
STARTED_BOOTED = 0
SUSPENDED_PAUSED, SUSPENDED_IOERROR = 0, 2
RESUMED_UNPAUSED = 0
STOPPED_SHUTDOWN, STOPPED_DESTROYED = 0, 1
UNDEFINED_REMOVED = 0
IO_ERROR_PAUSE = 1

# Flags (libvirt-domain.h).
DESTROY_GRACEFUL = 1
DEFINE_VALIDATE = 1
START_VALIDATE = 16
UNDEFINE_MANAGED_SAVE, UNDEFINE_SNAPSHOTS_METADATA = 1, 2
REBOOT_FLAGS = 0x1F  # DEFAULT, ACPI_POWER_BTN, GUEST_AGENT, INITCTL, SIGNAL, PARAVIRT
XML_COMMON_FLAGS = 0xF  # SECURE, INACTIVE, UPDATE_CPU, MIGRATABLE
XML_INACTIVE = 2
THRESHOLD_PERCENTAGE = 1  # the 2015 proposal's flag: threshold in 1/1000 of a percent
STATS_STATE, STATS_BLOCK = 1, 32
STATS_SUPPORTED = STATS_STATE | STATS_BLOCK
STATS_FLAGS = 0xFF | (1 << 29) | (1 << 30) | (1 << 31)  # filters, NOWAIT, BACKING, ENFORCE
STATS_BACKING, STATS_ENFORCE = 1 << 30, 1 << 31
LIST_FLAGS = 0xFFFF


def check_flags(flags: int, supported: int, function: str, domain: ErrorDomain) -> None:
    """libvirt's virCheckFlags: refuse flags outside ``supported``, naming ``function``."""
    unsupported = flags & ~supported
    if unsupported:
        raise RemoteError.create(
            ErrorNumber.INVALID_ARG, domain,
            f"unsupported flags ({unsupported:#x}) in function {function}",
            str1=function, str2="flags",
        )


def _test_error(code: ErrorNumber, detail: str | None = None) -> RemoteError:
    return RemoteError.report(code, ErrorDomain.TEST, detail)


def _not_running() -> RemoteError:
    return RemoteError.report(ErrorNumber.OPERATION_INVALID, ErrorDomain.DOMAIN,
                              "domain is not running")


@dataclass(eq=False)
class MockDomain:
    """One domain; ``definition`` is the live XML of a running domain, or its config."""

    definition: DomainXML
    persistent: bool = True
    state: DomainState = DomainState.SHUTOFF
    reason: int = 0
    id: int = -1
    autostart: bool = False
    next_definition: DomainXML | None = None  # config redefined while running
    disks: dict[str, ThinDisk] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # taints, as virsh dominfo shows them
    image_index: dict[str, tuple[int, int]] = field(default_factory=dict)  # top, depth

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def uuid(self) -> bytes:
        return self.definition.uuid

    @property
    def active(self) -> bool:
        return self.state not in (DomainState.SHUTOFF, DomainState.CRASHED)

    @property
    def handle(self) -> NonnullDomain:
        return NonnullDomain(self.name, self.uuid, self.id)

    @property
    def config(self) -> DomainXML:
        """The persistent definition (what ``--inactive`` shows)."""
        return self.next_definition or self.definition

    def disk(self, dev: str) -> ThinDisk:
        """The disk with target ``dev``, or the one whose source path is ``dev``."""
        found = self.disks.get(dev)
        if found is None:
            found = next((d for d in self.disks.values() if d.path == dev), None)
        if found is None:
            raise KeyError(dev)
        return found

    def alias(self, target: str) -> str:
        """qemu's device alias for a disk ("virtio-disk0" for vda)."""
        bus = _disk_bus(self.definition, target)
        index = _target_index(target)
        return f"virtio-disk{index}" if bus == "virtio" else f"{bus}-disk{index}"


def _disk_bus(definition: DomainXML, target: str) -> str:
    for dev, element in definition.disks():
        if dev == target:
            bus = element.find("target").get("bus")  # type: ignore[union-attr]
            if bus:
                return bus
    return {"vd": "virtio", "sd": "scsi", "hd": "ide"}.get(target[:2], "virtio")


def _target_index(target: str) -> int:
    """vda -> 0, vdz -> 25, vdaa -> 26 (libvirt's virDiskNameToIndex)."""
    letters = target[2:] if target[:2] in ("vd", "sd", "hd", "xv") else target[3:]
    index = 0
    for char in letters:
        if not char.isalpha():
            break
        index = index * 26 + (ord(char.lower()) - ord("a") + 1)
    return max(index - 1, 0)


class MockHypervisor:
    """The in-memory hypervisor; see the module docstring."""

    def __init__(
        self,
        *,
        test_domain: bool = True,
        default_capacity: int = DEFAULT_CAPACITY,
        default_block_physical: int = DEFAULT_BLOCK_PHYSICAL,
    ) -> None:
        self.default_capacity = default_capacity
        self.default_block_physical = default_block_physical
        self.domains: dict[bytes, MockDomain] = {}
        self._next_id = itertools.count(1)
        self._subscribers: list[Callable[[Event], None]] = []
        if test_domain:
            domain = self._add(parse_domain_xml(TEST_DOMAIN_XML), persistent=True)
            disk = domain.disks["vda"]
            disk.capacity, disk.allocation = _TEST_DISK_CAPACITY, _TEST_DISK_SIZE
            disk.physical, disk.preallocated = _TEST_DISK_SIZE, True
            self._start(domain, RUNNING_UNKNOWN)

    # ------------------------------------------------------------------ events

    def subscribe(self, emit: Callable[[Event], None]) -> Callable[[], None]:
        """Send every event to ``emit``; returns the function that stops it."""
        self._subscribers.append(emit)
        return lambda: self._subscribers.remove(emit)

    def emit(self, event: Event) -> None:
        for emit in list(self._subscribers):
            emit(event)

    def _lifecycle(self, domain: MockDomain, event: DomainLifecycle, detail: int) -> None:
        self.emit(LifecycleEvent(domain.handle, event, detail))

    # ------------------------------------------------------------------ lookups

    def __iter__(self) -> Iterator[MockDomain]:
        return iter(list(self.domains.values()))

    def by_name(self, name: str) -> MockDomain:
        for domain in self.domains.values():
            if domain.name == name:
                return domain
        raise _test_error(ErrorNumber.NO_DOMAIN)

    def by_uuid(self, uuid: bytes) -> MockDomain:
        domain = self.domains.get(bytes(uuid))
        if domain is None:
            raise _test_error(ErrorNumber.NO_DOMAIN)
        return domain

    def by_id(self, domain_id: int) -> MockDomain:
        for domain in self.domains.values():
            if domain.active and domain.id == domain_id:
                return domain
        raise _test_error(ErrorNumber.NO_DOMAIN)

    def lookup(self, handle: NonnullDomain) -> MockDomain:
        """The domain a client's handle names (by uuid, as libvirt resolves it)."""
        domain = self.domains.get(bytes(handle.uuid))
        if domain is None:
            raise _test_error(
                ErrorNumber.NO_DOMAIN,
                f"no domain with matching uuid '{format_uuid(handle.uuid)}' ({handle.name})",
            )
        return domain

    def find(self, domain: MockDomain | str) -> MockDomain:
        """A domain given as itself or by name (for the Python and mockctl APIs)."""
        return domain if isinstance(domain, MockDomain) else self.by_name(domain)

    # ------------------------------------------------------------------ definitions

    def _add(self, definition: DomainXML, persistent: bool) -> MockDomain:
        domain = MockDomain(definition, persistent=persistent)
        self._attach_disks(domain, definition)
        self.domains[domain.uuid] = domain
        return domain

    def _attach_disks(self, domain: MockDomain, definition: DomainXML) -> None:
        """Disks of ``definition``: kept when target and image are unchanged."""
        disks: dict[str, ThinDisk] = {}
        for target, element in definition.disks():
            source = element.find("source")
            path = None if source is None else (source.get("file") or source.get("dev"))
            driver = element.find("driver")
            kind = element.get("type", "file")
            old = domain.disks.get(target)
            if old is not None and old.path == path:
                disks[target] = old
                continue
            disks[target] = ThinDisk(
                target, path, self.default_capacity,
                format=(driver.get("type") if driver is not None else None) or "raw",
                grows=kind != "block",
                physical=self.default_block_physical if kind == "block" else NEW_IMAGE_SIZE,
            )
        domain.disks = disks

    def _check_unique(self, definition: DomainXML) -> MockDomain | None:
        """The domain this definition updates (same uuid and name), or None if new."""
        same_uuid = self.domains.get(definition.uuid)
        if same_uuid is not None:
            if same_uuid.name != definition.name:
                raise RemoteError.report(
                    ErrorNumber.OPERATION_FAILED, ErrorDomain.DOMAIN,
                    f"domain '{same_uuid.name}' is already defined with uuid "
                    f"{format_uuid(same_uuid.uuid)}",
                )
            return same_uuid
        for domain in self.domains.values():
            if domain.name == definition.name:
                raise RemoteError.report(
                    ErrorNumber.OPERATION_FAILED, ErrorDomain.DOMAIN,
                    f"domain '{domain.name}' already exists with uuid {format_uuid(domain.uuid)}",
                )
        return None

    def define_xml(self, xml: str, flags: int = 0) -> MockDomain:
        check_flags(flags, DEFINE_VALIDATE, "testDomainDefineXMLFlags", ErrorDomain.TEST)
        definition = parse_domain_xml(xml)
        domain = self._check_unique(definition)
        if domain is None:
            domain = self._add(definition, persistent=True)
            detail = DEFINED_ADDED
        else:
            if domain.active:
                domain.next_definition = definition
            else:
                domain.definition = definition
                self._attach_disks(domain, definition)
            domain.persistent = True
            detail = DEFINED_UPDATED
        self._lifecycle(domain, DomainLifecycle.DEFINED, detail)
        return domain

    def create_xml(self, xml: str, flags: int = 0) -> MockDomain:
        check_flags(flags, START_VALIDATE, "testDomainCreateXML", ErrorDomain.TEST)
        definition = parse_domain_xml(xml)
        domain = self._check_unique(definition)
        if domain is not None and domain.active:
            raise RemoteError.report(
                ErrorNumber.OPERATION_INVALID, ErrorDomain.DOMAIN,
                f"domain '{domain.name}' is already active",
            )
        if domain is None:
            domain = self._add(definition, persistent=False)
        else:
            domain.next_definition = domain.definition
            domain.definition = definition
            self._attach_disks(domain, definition)
        self._start(domain, RUNNING_BOOTED)
        self._lifecycle(domain, DomainLifecycle.STARTED, STARTED_BOOTED)
        return domain

    def undefine(self, domain: MockDomain, flags: int = 0) -> None:
        check_flags(flags, UNDEFINE_MANAGED_SAVE | UNDEFINE_SNAPSHOTS_METADATA,
                    "testDomainUndefineFlags", ErrorDomain.TEST)
        self._lifecycle(domain, DomainLifecycle.UNDEFINED, UNDEFINED_REMOVED)
        if domain.active:
            domain.persistent = False
            domain.next_definition = None
        else:
            del self.domains[domain.uuid]

    # ------------------------------------------------------------------ lifecycle

    def _start(self, domain: MockDomain, reason: int) -> None:
        domain.state, domain.reason = DomainState.RUNNING, reason
        domain.id = next(self._next_id)
        domain.image_index = {}
        index = 1
        for target, element in domain.definition.disks():
            depth = sum(1 for _ in element.iter("backingStore") if _.find("source") is not None)
            domain.image_index[target] = (index, depth)
            index += 1 + depth

    def _stop(self, domain: MockDomain, reason: int) -> None:
        domain.state, domain.reason = DomainState.SHUTOFF, reason
        domain.id = -1
        for disk in domain.disks.values():
            disk.threshold = 0
        if domain.next_definition is not None:
            domain.definition, domain.next_definition = domain.next_definition, None
            self._attach_disks(domain, domain.definition)

    def _stopped(self, domain: MockDomain, reason: int, detail: int) -> None:
        self._stop(domain, reason)
        self._lifecycle(domain, DomainLifecycle.STOPPED, detail)
        if not domain.persistent:
            del self.domains[domain.uuid]

    def start(self, domain: MockDomain, flags: int = 0) -> None:
        check_flags(flags, 0, "testDomainCreateWithFlags", ErrorDomain.TEST)
        if domain.state != DomainState.SHUTOFF:
            raise _test_error(ErrorNumber.INTERNAL_ERROR,
                              f"Domain '{domain.name}' is already running")
        self._start(domain, RUNNING_BOOTED)
        self._lifecycle(domain, DomainLifecycle.STARTED, STARTED_BOOTED)

    def destroy(self, domain: MockDomain, flags: int = 0) -> None:
        check_flags(flags, DESTROY_GRACEFUL, "testDomainDestroyFlags", ErrorDomain.TEST)
        if not domain.active:
            raise _not_running()
        self._stopped(domain, SHUTOFF_DESTROYED, STOPPED_DESTROYED)

    def suspend(self, domain: MockDomain, name: str) -> None:
        """``name`` is the name the client used (the test driver's errors quote it)."""
        if domain.state in (DomainState.SHUTOFF, DomainState.PAUSED):
            raise _test_error(ErrorNumber.INTERNAL_ERROR, f"domain '{name}' not running")
        domain.state, domain.reason = DomainState.PAUSED, PAUSED_USER
        self._lifecycle(domain, DomainLifecycle.SUSPENDED, SUSPENDED_PAUSED)

    def resume(self, domain: MockDomain, name: str) -> None:
        if domain.state != DomainState.PAUSED:
            raise _test_error(ErrorNumber.INTERNAL_ERROR, f"domain '{name}' not paused")
        domain.state, domain.reason = DomainState.RUNNING, RUNNING_UNPAUSED
        self._lifecycle(domain, DomainLifecycle.RESUMED, RESUMED_UNPAUSED)

    def shutdown(self, domain: MockDomain, name: str, flags: int = 0) -> None:
        check_flags(flags, 0, "testDomainShutdownFlags", ErrorDomain.TEST)
        if domain.state == DomainState.SHUTOFF:
            raise _test_error(ErrorNumber.INTERNAL_ERROR, f"domain '{name}' not running")
        self._lifecycle_action(domain, domain.definition.lifecycle_action("on_poweroff", "destroy"))

    def reboot(self, domain: MockDomain, flags: int = 0) -> None:
        check_flags(flags, REBOOT_FLAGS, "testDomainReboot", ErrorDomain.TEST)
        if not domain.active:
            raise _not_running()
        self._lifecycle_action(domain, domain.definition.lifecycle_action("on_reboot", "restart"))

    def _lifecycle_action(self, domain: MockDomain, action: str) -> None:
        """The test driver's reaction to a guest shutdown or reboot."""
        if action in ("restart", "rename-restart"):
            domain.state, domain.reason = DomainState.RUNNING, RUNNING_BOOTED
        else:
            self._stopped(domain, SHUTOFF_SHUTDOWN, STOPPED_SHUTDOWN)

    # ------------------------------------------------------------------ disks

    def disk(self, domain: MockDomain | str, dev: str) -> ThinDisk:
        """A domain's disk by target (or source path); KeyError if it has none."""
        return self.find(domain).disk(dev)

    def write(self, domain: MockDomain | str, dev: str, offset: int, length: int) -> WriteResult:
        """``length`` bytes are written at guest offset ``offset`` of ``dev`` of an
        active domain (as by qemu-io in its monitor: a paused guest's disk takes them too).

        Fires the disk's block threshold when the write passes it. When a block device
        is full, the write fails as in qemu (ENOSPC): I/O error events, the domain pauses,
        and NoSpace is raised.
        """
        domain = self.find(domain)
        if not domain.active:
            raise _not_running()
        disk = domain.disk(dev)
        try:
            result = disk.write(offset, length)
        except NoSpace:
            self._enospc(domain, disk)
            raise
        fired = disk.take_threshold(result.end)
        if fired is not None:
            self._threshold_events(domain, disk, *fired)
        return result

    def grow(self, domain: MockDomain | str, dev: str, physical: int) -> ThinDisk:
        """Set the physical size of a disk (say, after ``lvextend``)."""
        disk = self.disk(domain, dev)
        disk.grow(physical)
        return disk

    def _enospc(self, domain: MockDomain, disk: ThinDisk) -> None:
        """qemu's reaction to ENOSPC (werror=enospc): I/O error events, guest paused."""
        alias = domain.alias(disk.target)
        path = disk.path or ""
        self.emit(IoErrorEvent(domain.handle, path, alias, IO_ERROR_PAUSE))
        self.emit(IoErrorReasonEvent(domain.handle, path, alias, IO_ERROR_PAUSE, "enospc"))
        if domain.state == DomainState.RUNNING:
            domain.state, domain.reason = DomainState.PAUSED, PAUSED_IOERROR
            self._lifecycle(domain, DomainLifecycle.SUSPENDED, SUSPENDED_IOERROR)

    def _threshold_events(
        self, domain: MockDomain, disk: ThinDisk, threshold: int, excess: int
    ) -> None:
        """libvirt 7.6+: "vda" unless set with an index, and "vda[N]" for the image."""
        index, _ = domain.image_index.get(disk.target, (0, 0))
        names = [] if disk.threshold_indexed else [disk.target]
        if index:
            names.append(f"{disk.target}[{index}]")
        for name in names:
            self.emit(BlockThresholdEvent(domain.handle, name, disk.path, threshold, excess))

    def set_block_threshold(
        self, domain: MockDomain, dev: str, threshold: int, flags: int = 0
    ) -> None:
        """virDomainSetBlockThreshold as libvirt's qemu driver does it, plus the
        percentage flag (bit 0): ``threshold`` in thousandths of a percent of capacity."""
        check_flags(flags, THRESHOLD_PERCENTAGE, "qemuDomainSetBlockThreshold", ErrorDomain.QEMU)
        if not domain.active:
            raise _not_running()
        disk = self._threshold_disk(domain, dev)
        if disk is None:
            return  # a backing image: never written, its threshold never fires
        if flags & THRESHOLD_PERCENTAGE:
            if threshold > _PERCENT_SCALE:
                raise RemoteError.report(
                    ErrorNumber.INVALID_ARG, ErrorDomain.QEMU,
                    f"threshold percentage {threshold} is above {_PERCENT_SCALE} (100%)",
                )
            threshold = disk.capacity * threshold // _PERCENT_SCALE
        disk.threshold = threshold
        disk.threshold_indexed = "[" in dev

    def _threshold_disk(self, domain: MockDomain, dev: str) -> ThinDisk | None:
        target, _, rest = dev.partition("[")
        index = 0
        if rest:
            digits = rest[:-1] if rest.endswith("]") else ""
            if not digits.isdigit():
                raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.QEMU,
                                         f"failed to parse block device '{dev}'")
            index = int(digits)
        disk = domain.disks.get(target)
        if disk is None:
            raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.QEMU,
                                     f"failed to find disk '{target}'")
        top, depth = domain.image_index.get(target, (0, 0))
        if index in (0, top):
            return disk
        if top < index <= top + depth:
            return None
        raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.QEMU,
                                 f"failed to find disk '{dev}'")

    # ------------------------------------------------------------------ listing, stats

    def list_domains(self, flags: int) -> list[MockDomain]:
        """virConnectListAllDomains' filters."""
        check_flags(flags, LIST_FLAGS, "testConnectListAllDomains", ErrorDomain.TEST)
        return [d for d in self if _matches(d, flags)]

    def all_stats(
        self, domains: list[MockDomain] | None, stats: int, flags: int
    ) -> list[tuple[MockDomain, list[TypedParam]]]:
        check_flags(flags, STATS_FLAGS, "testConnectGetAllDomainStats", ErrorDomain.TEST)
        if not stats:
            stats = STATS_SUPPORTED
        elif flags & STATS_ENFORCE and stats & ~STATS_SUPPORTED:
            raise RemoteError.report(
                ErrorNumber.ARGUMENT_UNSUPPORTED, ErrorDomain.TEST,
                f"Stats types bits {stats & ~STATS_SUPPORTED:#x} are not supported by this daemon",
            )
        filters = flags & 0xFF
        chosen = list(self) if domains is None else domains
        return [(d, self.stats(d, stats, flags)) for d in chosen if _matches(d, filters)]

    def stats(self, domain: MockDomain, stats: int, flags: int = 0) -> list[TypedParam]:
        """The typed parameters of one domain's stats record (state and block groups)."""
        items: list[tuple[str, TypedParamType, TypedValue]] = []
        if stats & STATS_STATE:
            items += [("state.state", TypedParamType.INT, int(domain.state)),
                      ("state.reason", TypedParamType.INT, domain.reason)]
        if stats & STATS_BLOCK:
            items += self._block_stats(domain, bool(flags & STATS_BACKING))
        return encode_params(items)

    def _block_stats(
        self, domain: MockDomain, backing: bool
    ) -> list[tuple[str, TypedParamType, TypedValue]]:
        U, S, L = TypedParamType.UINT, TypedParamType.STRING, TypedParamType.ULLONG
        items: list[tuple[str, TypedParamType, TypedValue]] = []
        n = 0
        for target, element in domain.definition.disks():
            disk = domain.disks[target]
            top, _ = domain.image_index.get(target, (0, 0)) if domain.active else (0, 0)
            p = f"block.{n}."
            items.append((p + "name", S, target))
            if disk.path:
                items.append((p + "path", S, disk.path))
            if top:
                items.append((p + "backingIndex", U, top))
            if domain.active:
                items += [(p + "rd.reqs", L, disk.rd_reqs), (p + "rd.bytes", L, disk.rd_bytes),
                          (p + "rd.times", L, 0), (p + "wr.reqs", L, disk.wr_reqs),
                          (p + "wr.bytes", L, disk.wr_bytes), (p + "wr.times", L, 0),
                          (p + "fl.reqs", L, 0), (p + "fl.times", L, 0),
                          (p + "allocation", L, disk.allocation)]
            elif disk.allocation:
                items.append((p + "allocation", L, disk.allocation))
            items += [(p + "capacity", L, disk.capacity), (p + "physical", L, disk.physical)]
            if disk.threshold:
                items.append((p + "threshold", L, disk.threshold))
            n += 1
            if backing and top:
                for i, store in enumerate(s for s in element.iter("backingStore")
                                          if s.find("source") is not None):
                    source = store.find("source")
                    p = f"block.{n}."
                    items.append((p + "name", S, target))
                    path = source.get("file") or source.get("dev") if source is not None else None
                    if path:
                        items.append((p + "path", S, path))
                    items.append((p + "backingIndex", U, top + 1 + i))
                    n += 1
        return [("block.count", U, n), *items]

    @staticmethod
    def cpu_time() -> int:
        """The test driver reports the wall clock as CPU time (ns)."""
        return time.time_ns()


def _matches(domain: MockDomain, flags: int) -> bool:
    """libvirt's virDomainObjMatchFilter for the filters the mock has."""

    def wants(yes: int, no: int, value: bool) -> bool:
        group = flags & (yes | no)
        return not group or bool(group & yes and value) or bool(group & no and not value)

    state = domain.state
    if not wants(1, 2, domain.active) or not wants(4, 8, domain.persistent):
        return False
    if flags & 0xF0:
        kinds = {DomainState.RUNNING: 16, DomainState.PAUSED: 32, DomainState.SHUTOFF: 64}
        if not flags & kinds.get(state, 128):
            return False
    return (
        wants(1 << 8, 1 << 9, False)  # managed save
        and wants(1 << 10, 1 << 11, domain.autostart)
        and wants(1 << 12, 1 << 13, False)  # snapshots
        and wants(1 << 14, 1 << 15, False)  # checkpoints
    )
