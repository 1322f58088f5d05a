"""A client's connection to the mock hypervisor: the procedures it implements.

Each method answers one procedure as libvirt 9.0's test driver (and, for block
thresholds and the monitor, its qemu driver) answers it, with the same values and
errors; the mockctl program (protocol/mockctl.x) drives guest writes and disk growth.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from pyvirtrpc.backends.base import BackendConnection, EmitEvent, implements
from pyvirtrpc.backends.mock.disk import NoSpace, ThinDisk
from pyvirtrpc.backends.mock.hypervisor import (
    XML_COMMON_FLAGS,
    XML_INACTIVE,
    MockDomain,
    MockHypervisor,
    check_flags,
)
from pyvirtrpc.backends.mock.monitor import TAINT_MESSAGE, monitor_command
from pyvirtrpc.errors import ErrorDomain, ErrorNumber, RemoteError
from pyvirtrpc.events import EventFamily
from pyvirtrpc.gen import mockctl, qemu, remote
from pyvirtrpc.gen.mockctl import Procedure as M
from pyvirtrpc.gen.qemu import Procedure as Q
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.remote import TypedParamType
from pyvirtrpc.typedparams import encode_params

__all__ = ["MockConnection"]

HV_VERSION = 2  # the test driver's "0.0.2"
LIB_VERSION = 9_000_000  # libvirt 9.0.0
SECURITY_MODEL = "testSecurity"
SECURITY_LABEL = "libvirt-test"
MONITOR_HMP = 1
MESSAGE_FLAGS = 3  # DEPRECATION, TAINTING
# What NODE_GET_INFO says for the test driver: model, memory KiB, cpus, MHz, NUMA
# nodes, sockets, cores, threads.
NODE_INFO = ("i686", 3145728, 16, 1400, 2, 2, 2, 2)
FEATURE_TYPED_PARAM_STRING = 9
FEATURE_NETWORK_UPDATE_HAS_CORRECT_ORDER = 16


def _chars(text: str, size: int | None = None) -> list[int]:
    """A C char array as libvirt sends it: one XDR word per char, NUL-terminated."""
    chars = [*text.encode(), 0]
    return chars + [0] * (size - len(chars)) if size else chars


def _disk_info(disk: ThinDisk) -> mockctl.DiskInfo:
    return mockctl.DiskInfo(disk.capacity, disk.allocation, disk.physical, disk.threshold)


class MockConnection(BackendConnection):
    """One client's connection (the test driver keeps one state for all of them)."""

    event_families = frozenset(
        {EventFamily.DOMAIN, EventFamily.NETWORK, EventFamily.STORAGE_POOL,
         EventFamily.NODE_DEVICE}
    )

    def __init__(self, hypervisor: MockHypervisor, uri: str, emit: EmitEvent) -> None:
        self.hv = hypervisor
        self.uri = uri
        self._unsubscribe: Callable[[], None] = hypervisor.subscribe(emit)

    async def aclose(self) -> None:
        self._unsubscribe()

    def _domain(self, handle: remote.NonnullDomain | qemu.NonnullDomain) -> MockDomain:
        return self.hv.lookup(remote.NonnullDomain(handle.name, handle.uuid, handle.id))

    # ------------------------------------------------------------------ connection

    @implements(P.CONNECT_GET_TYPE)
    def get_type(self) -> remote.ConnectGetTypeRet:
        return remote.ConnectGetTypeRet("TEST")

    @implements(P.CONNECT_GET_VERSION)
    def get_version(self) -> remote.ConnectGetVersionRet:
        return remote.ConnectGetVersionRet(HV_VERSION)

    @implements(P.CONNECT_GET_LIB_VERSION)
    def get_lib_version(self) -> remote.ConnectGetLibVersionRet:
        return remote.ConnectGetLibVersionRet(LIB_VERSION)

    @implements(P.CONNECT_GET_HOSTNAME)
    def get_hostname(self) -> remote.ConnectGetHostnameRet:
        return remote.ConnectGetHostnameRet(socket.gethostname())

    @implements(P.CONNECT_GET_URI)
    def get_uri(self) -> remote.ConnectGetUriRet:
        return remote.ConnectGetUriRet(self.uri)

    @implements(P.CONNECT_SUPPORTS_FEATURE)
    def supports_feature(
        self, args: remote.ConnectSupportsFeatureArgs
    ) -> remote.ConnectSupportsFeatureRet:
        supported = args.feature in (
            FEATURE_TYPED_PARAM_STRING, FEATURE_NETWORK_UPDATE_HAS_CORRECT_ORDER
        )
        return remote.ConnectSupportsFeatureRet(int(supported))

    @implements(P.NODE_GET_INFO)
    def node_info(self) -> remote.NodeGetInfoRet:
        model, *numbers = NODE_INFO
        return remote.NodeGetInfoRet(_chars(str(model), 32), *numbers)

    @implements(P.NODE_GET_SECURITY_MODEL)
    def security_model(self) -> remote.NodeGetSecurityModelRet:
        return remote.NodeGetSecurityModelRet(_chars(SECURITY_MODEL), _chars(""))

    # ------------------------------------------------------------------ listing

    @implements(P.CONNECT_LIST_ALL_DOMAINS)
    def list_all(self, args: remote.ConnectListAllDomainsArgs) -> remote.ConnectListAllDomainsRet:
        domains = self.hv.list_domains(args.flags)
        handles = [d.handle for d in domains] if args.need_results else []
        return remote.ConnectListAllDomainsRet(handles, len(domains))

    @implements(P.CONNECT_NUM_OF_DOMAINS)
    def num_of_domains(self) -> remote.ConnectNumOfDomainsRet:
        return remote.ConnectNumOfDomainsRet(sum(d.active for d in self.hv))

    @implements(P.CONNECT_LIST_DOMAINS)
    def list_domains(self, args: remote.ConnectListDomainsArgs) -> remote.ConnectListDomainsRet:
        return remote.ConnectListDomainsRet([d.id for d in self.hv if d.active][: args.maxids])

    @implements(P.CONNECT_NUM_OF_DEFINED_DOMAINS)
    def num_of_defined(self) -> remote.ConnectNumOfDefinedDomainsRet:
        return remote.ConnectNumOfDefinedDomainsRet(sum(not d.active for d in self.hv))

    @implements(P.CONNECT_LIST_DEFINED_DOMAINS)
    def list_defined(
        self, args: remote.ConnectListDefinedDomainsArgs
    ) -> remote.ConnectListDefinedDomainsRet:
        names = [d.name for d in self.hv if not d.active]
        return remote.ConnectListDefinedDomainsRet(names[: args.maxnames])

    # ------------------------------------------------------------------ lookups

    @implements(P.DOMAIN_LOOKUP_BY_NAME)
    def lookup_by_name(self, args: remote.DomainLookupByNameArgs) -> remote.DomainLookupByNameRet:
        return remote.DomainLookupByNameRet(self.hv.by_name(args.name).handle)

    @implements(P.DOMAIN_LOOKUP_BY_UUID)
    def lookup_by_uuid(self, args: remote.DomainLookupByUuidArgs) -> remote.DomainLookupByUuidRet:
        return remote.DomainLookupByUuidRet(self.hv.by_uuid(args.uuid).handle)

    @implements(P.DOMAIN_LOOKUP_BY_ID)
    def lookup_by_id(self, args: remote.DomainLookupByIdArgs) -> remote.DomainLookupByIdRet:
        return remote.DomainLookupByIdRet(self.hv.by_id(args.id).handle)

    # ------------------------------------------------------------------ lifecycle

    @implements(P.DOMAIN_DEFINE_XML)
    def define_xml(self, args: remote.DomainDefineXmlArgs) -> remote.DomainDefineXmlRet:
        return remote.DomainDefineXmlRet(self.hv.define_xml(args.xml).handle)

    @implements(P.DOMAIN_DEFINE_XML_FLAGS)
    def define_xml_flags(
        self, args: remote.DomainDefineXmlFlagsArgs
    ) -> remote.DomainDefineXmlFlagsRet:
        return remote.DomainDefineXmlFlagsRet(self.hv.define_xml(args.xml, args.flags).handle)

    @implements(P.DOMAIN_CREATE_XML)
    def create_xml(self, args: remote.DomainCreateXmlArgs) -> remote.DomainCreateXmlRet:
        return remote.DomainCreateXmlRet(self.hv.create_xml(args.xml_desc, args.flags).handle)

    @implements(P.DOMAIN_UNDEFINE)
    def undefine(self, args: remote.DomainUndefineArgs) -> None:
        self.hv.undefine(self._domain(args.dom))

    @implements(P.DOMAIN_UNDEFINE_FLAGS)
    def undefine_flags(self, args: remote.DomainUndefineFlagsArgs) -> None:
        self.hv.undefine(self._domain(args.dom), args.flags)

    @implements(P.DOMAIN_CREATE)
    def create(self, args: remote.DomainCreateArgs) -> None:
        self.hv.start(self._domain(args.dom))

    @implements(P.DOMAIN_CREATE_WITH_FLAGS)
    def create_with_flags(
        self, args: remote.DomainCreateWithFlagsArgs
    ) -> remote.DomainCreateWithFlagsRet:
        domain = self._domain(args.dom)
        self.hv.start(domain, args.flags)
        return remote.DomainCreateWithFlagsRet(domain.handle)

    @implements(P.DOMAIN_DESTROY)
    def destroy(self, args: remote.DomainDestroyArgs) -> None:
        self.hv.destroy(self._domain(args.dom))

    @implements(P.DOMAIN_DESTROY_FLAGS)
    def destroy_flags(self, args: remote.DomainDestroyFlagsArgs) -> None:
        self.hv.destroy(self._domain(args.dom), args.flags)

    @implements(P.DOMAIN_SUSPEND)
    def suspend(self, args: remote.DomainSuspendArgs) -> None:
        self.hv.suspend(self._domain(args.dom), args.dom.name)

    @implements(P.DOMAIN_RESUME)
    def resume(self, args: remote.DomainResumeArgs) -> None:
        self.hv.resume(self._domain(args.dom), args.dom.name)

    @implements(P.DOMAIN_SHUTDOWN)
    def shutdown(self, args: remote.DomainShutdownArgs) -> None:
        self.hv.shutdown(self._domain(args.dom), args.dom.name)

    @implements(P.DOMAIN_SHUTDOWN_FLAGS)
    def shutdown_flags(self, args: remote.DomainShutdownFlagsArgs) -> None:
        self.hv.shutdown(self._domain(args.dom), args.dom.name, args.flags)

    @implements(P.DOMAIN_REBOOT)
    def reboot(self, args: remote.DomainRebootArgs) -> None:
        self.hv.reboot(self._domain(args.dom), args.flags)

    # ------------------------------------------------------------------ information

    @implements(P.DOMAIN_GET_INFO)
    def get_info(self, args: remote.DomainGetInfoArgs) -> remote.DomainGetInfoRet:
        domain = self._domain(args.dom)
        definition = domain.definition
        return remote.DomainGetInfoRet(
            int(domain.state), definition.max_memory, definition.current_memory,
            definition.vcpus, self.hv.cpu_time(),
        )

    @implements(P.DOMAIN_GET_STATE)
    def get_state(self, args: remote.DomainGetStateArgs) -> remote.DomainGetStateRet:
        check_flags(args.flags, 0, "testDomainGetState", ErrorDomain.TEST)
        domain = self._domain(args.dom)
        return remote.DomainGetStateRet(int(domain.state), domain.reason)

    @implements(P.DOMAIN_GET_XML_DESC)
    def get_xml_desc(self, args: remote.DomainGetXmlDescArgs) -> remote.DomainGetXmlDescRet:
        check_flags(args.flags, XML_COMMON_FLAGS, "testDomainGetXMLDesc", ErrorDomain.TEST)
        domain = self._domain(args.dom)
        if args.flags & XML_INACTIVE:
            return remote.DomainGetXmlDescRet(domain.config.format())
        live_id = domain.id if domain.active else None
        return remote.DomainGetXmlDescRet(domain.definition.format(live_id))

    @implements(P.DOMAIN_GET_OS_TYPE)
    def get_os_type(self, args: remote.DomainGetOsTypeArgs) -> remote.DomainGetOsTypeRet:
        return remote.DomainGetOsTypeRet("linux")  # the test driver's answer for any domain

    @implements(P.DOMAIN_IS_ACTIVE)
    def is_active(self, args: remote.DomainIsActiveArgs) -> remote.DomainIsActiveRet:
        return remote.DomainIsActiveRet(int(self._domain(args.dom).active))

    @implements(P.DOMAIN_IS_PERSISTENT)
    def is_persistent(self, args: remote.DomainIsPersistentArgs) -> remote.DomainIsPersistentRet:
        return remote.DomainIsPersistentRet(int(self._domain(args.dom).persistent))

    @implements(P.DOMAIN_GET_AUTOSTART)
    def get_autostart(self, args: remote.DomainGetAutostartArgs) -> remote.DomainGetAutostartRet:
        return remote.DomainGetAutostartRet(int(self._domain(args.dom).autostart))

    @implements(P.DOMAIN_SET_AUTOSTART)
    def set_autostart(self, args: remote.DomainSetAutostartArgs) -> None:
        self._domain(args.dom).autostart = bool(args.autostart)

    @implements(P.DOMAIN_HAS_MANAGED_SAVE_IMAGE)
    def has_managed_save(
        self, args: remote.DomainHasManagedSaveImageArgs
    ) -> remote.DomainHasManagedSaveImageRet:
        check_flags(args.flags, 0, "testDomainHasManagedSaveImage", ErrorDomain.TEST)
        self._domain(args.dom)
        return remote.DomainHasManagedSaveImageRet(0)

    @implements(P.DOMAIN_SNAPSHOT_NUM)
    def snapshot_num(self, args: remote.DomainSnapshotNumArgs) -> remote.DomainSnapshotNumRet:
        self._domain(args.dom)
        return remote.DomainSnapshotNumRet(0)

    @implements(P.DOMAIN_GET_SECURITY_LABEL)
    def security_label(
        self, args: remote.DomainGetSecurityLabelArgs
    ) -> remote.DomainGetSecurityLabelRet:
        if self._domain(args.dom).active:
            return remote.DomainGetSecurityLabelRet(_chars(SECURITY_LABEL), 1)
        return remote.DomainGetSecurityLabelRet(_chars(""), 0)

    @implements(P.DOMAIN_GET_MESSAGES)
    def get_messages(self, args: remote.DomainGetMessagesArgs) -> remote.DomainGetMessagesRet:
        check_flags(args.flags, MESSAGE_FLAGS, "testDomainGetMessages", ErrorDomain.TEST)
        domain = self._domain(args.dom)
        tainting = not args.flags or args.flags & 2
        return remote.DomainGetMessagesRet(list(domain.messages) if tainting else [])

    # ------------------------------------------------------------------ disks

    def _active_disk(self, domain: MockDomain, path: str) -> ThinDisk:
        if not path:
            raise RemoteError.report(ErrorNumber.OPERATION_UNSUPPORTED, ErrorDomain.TEST,
                                     "summary statistics are not supported yet")
        if not domain.active:
            raise RemoteError.report(ErrorNumber.OPERATION_INVALID, ErrorDomain.DOMAIN,
                                     "domain is not running")
        try:
            return domain.disk(path)
        except KeyError:
            raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.TEST,
                                     f"invalid path: {path}") from None

    @implements(P.DOMAIN_GET_BLOCK_INFO)
    def block_info(self, args: remote.DomainGetBlockInfoArgs) -> remote.DomainGetBlockInfoRet:
        check_flags(args.flags, 0, "testDomainGetBlockInfo", ErrorDomain.TEST)
        domain = self._domain(args.dom)
        try:
            disk = domain.disk(args.path)
        except KeyError:
            raise RemoteError.report(
                ErrorNumber.INVALID_ARG, ErrorDomain.TEST,
                f"invalid path {args.path} not assigned to domain",
            ) from None
        return remote.DomainGetBlockInfoRet(disk.allocation, disk.capacity, disk.physical)

    @implements(P.DOMAIN_BLOCK_STATS)
    def block_stats(self, args: remote.DomainBlockStatsArgs) -> remote.DomainBlockStatsRet:
        disk = self._active_disk(self._domain(args.dom), args.path)
        return remote.DomainBlockStatsRet(
            disk.rd_reqs, disk.rd_bytes, disk.wr_reqs, disk.wr_bytes, 0
        )

    @implements(P.DOMAIN_BLOCK_STATS_FLAGS)
    def block_stats_flags(
        self, args: remote.DomainBlockStatsFlagsArgs
    ) -> remote.DomainBlockStatsFlagsRet:
        check_flags(args.flags, 4, "testDomainBlockStatsFlags", ErrorDomain.TEST)
        disk = self._active_disk(self._domain(args.dom), args.path)
        values = [("rd_operations", disk.rd_reqs), ("rd_bytes", disk.rd_bytes),
                  ("wr_operations", disk.wr_reqs), ("wr_bytes", disk.wr_bytes),
                  ("flush_operations", 0), ("rd_total_times", 0), ("wr_total_times", 0),
                  ("flush_total_times", 0)]
        if args.nparams == 0:  # the caller asks how many there are
            return remote.DomainBlockStatsFlagsRet([], len(values))
        params = encode_params(
            (name, TypedParamType.LLONG, value) for name, value in values[: args.nparams]
        )
        return remote.DomainBlockStatsFlagsRet(params, len(params))

    @implements(P.DOMAIN_SET_BLOCK_THRESHOLD)
    def set_block_threshold(self, args: remote.DomainSetBlockThresholdArgs) -> None:
        self.hv.set_block_threshold(self._domain(args.dom), args.dev, args.threshold, args.flags)

    @implements(P.CONNECT_GET_ALL_DOMAIN_STATS)
    def all_domain_stats(
        self, args: remote.ConnectGetAllDomainStatsArgs
    ) -> remote.ConnectGetAllDomainStatsRet:
        chosen = None
        if args.doms:  # names of domains that do not exist are skipped, as in libvirt
            chosen = [d for h in args.doms if (d := self.hv.domains.get(bytes(h.uuid)))]
        records = self.hv.all_stats(chosen, args.stats, args.flags)
        return remote.ConnectGetAllDomainStatsRet(
            [remote.DomainStatsRecord(domain.handle, params) for domain, params in records]
        )

    # ------------------------------------------------------------------ qemu monitor

    @implements(Q.DOMAIN_MONITOR_COMMAND)
    def monitor_command(
        self, args: qemu.DomainMonitorCommandArgs
    ) -> qemu.DomainMonitorCommandRet:
        check_flags(args.flags, MONITOR_HMP, "qemuDomainQemuMonitorCommand", ErrorDomain.QEMU)
        domain = self._domain(args.dom)
        if not domain.active:
            raise RemoteError.report(ErrorNumber.OPERATION_INVALID, ErrorDomain.DOMAIN,
                                     "domain is not running")
        if TAINT_MESSAGE not in domain.messages:
            domain.messages.append(TAINT_MESSAGE)
        result = monitor_command(self.hv, domain, args.cmd, bool(args.flags & MONITOR_HMP))
        return qemu.DomainMonitorCommandRet(result)

    # ------------------------------------------------------------------ mockctl

    def _mock_disk(self, name: str, dev: str) -> tuple[MockDomain, ThinDisk]:
        domain = self.hv.by_name(name)
        try:
            return domain, domain.disk(dev)
        except KeyError:
            raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.TEST,
                                     f"domain '{name}' has no disk '{dev}'") from None

    @implements(M.DISK_GET_INFO)
    def mock_disk_info(self, args: mockctl.DiskGetInfoArgs) -> mockctl.DiskGetInfoRet:
        return mockctl.DiskGetInfoRet(_disk_info(self._mock_disk(args.domain, args.dev)[1]))

    @implements(M.DISK_WRITE)
    def mock_disk_write(self, args: mockctl.DiskWriteArgs) -> mockctl.DiskWriteRet:
        domain, disk = self._mock_disk(args.domain, args.dev)
        try:
            self.hv.write(domain, disk.target, args.offset, args.length)
        except ValueError as exc:
            raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.TEST, str(exc)) from None
        except NoSpace as exc:
            raise RemoteError.report(ErrorNumber.OPERATION_FAILED, ErrorDomain.TEST,
                                     f"no space left on device: {exc}") from None
        return mockctl.DiskWriteRet(_disk_info(disk))

    @implements(M.DISK_GROW)
    def mock_disk_grow(self, args: mockctl.DiskGrowArgs) -> mockctl.DiskGrowRet:
        _, disk = self._mock_disk(args.domain, args.dev)
        try:
            disk.grow(args.physical)
        except ValueError as exc:
            raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.TEST, str(exc)) from None
        return mockctl.DiskGrowRet(_disk_info(disk))

