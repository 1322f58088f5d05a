"""Domains as the client sees them, and the plain records its facade returns."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, NamedTuple

from pyvirtrpc.errors import ErrorDomain, ErrorNumber, RemoteError
from pyvirtrpc.gen import qemu
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.typedparams import TypedValue

if TYPE_CHECKING:
    from pyvirtrpc.client.connection import Connection

QEMU_MONITOR_COMMAND_HMP = 1  # VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
PERCENT_SCALE = 100_000  # percentages are kept in thousandths of a percent


class DomainInfo(NamedTuple):
    """virDomainGetInfo: state, memory in KiB, vCPUs, CPU time in ns."""

    state: int
    max_mem: int
    memory: int
    nr_virt_cpu: int
    cpu_time: int


class BlockInfo(NamedTuple):
    """virDomainGetBlockInfo, in bytes."""

    capacity: int
    allocation: int
    physical: int


class BlockStats(NamedTuple):
    """virDomainBlockStats (-1 where the hypervisor does not count)."""

    rd_req: int
    rd_bytes: int
    wr_req: int
    wr_bytes: int
    errs: int


class NodeInfo(NamedTuple):
    """virNodeGetInfo: memory in KiB, CPU frequency in MHz."""

    model: str
    memory: int
    cpus: int
    mhz: int
    nodes: int
    sockets: int
    cores: int
    threads: int


def percent_to_thousandths(percent: float) -> int:
    """A percentage as the proposal keeps it, refused outside 0-100 % (nothing is sent)."""
    thousandths = round(percent * 1000)
    if not 0 <= thousandths <= PERCENT_SCALE:
        raise RemoteError.report(
            ErrorNumber.INVALID_ARG, ErrorDomain.DOMAIN,
            f"threshold percentage {percent}% is not within 0-100%",
        )
    return thousandths


class Domain:
    """A domain of one connection; methods are its libvirt APIs, async.

    ``name``, ``uuid`` and ``id`` are what the server said when the handle was made
    (``id`` is -1 for an inactive domain; starting it through this handle updates it).
    """

    def __init__(self, conn: Connection, ref: wire.NonnullDomain) -> None:
        self.conn = conn
        self.ref = ref

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.ref.uuid)

    @property
    def id(self) -> int:
        return self.ref.id

    def __repr__(self) -> str:
        return f"<Domain {self.name!r} id={self.id} uuid={self.uuid}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Domain) and other.ref.uuid == self.ref.uuid

    def __hash__(self) -> int:
        return hash(self.ref.uuid)

    # ---------------------------------------------------------------- facts

    async def info(self) -> DomainInfo:
        r = await self.conn._call(P.DOMAIN_GET_INFO, wire.DomainGetInfoArgs(self.ref),
                                  wire.DomainGetInfoRet)
        return DomainInfo(r.state, r.maxMem, r.memory, r.nrVirtCpu, r.cpuTime)

    async def state(self, flags: int = 0) -> tuple[int, int]:
        """(state, reason): VIR_DOMAIN_RUNNING... and its reason."""
        r = await self.conn._call(P.DOMAIN_GET_STATE, wire.DomainGetStateArgs(self.ref, flags),
                                  wire.DomainGetStateRet)
        return r.state, r.reason

    async def xml_desc(self, flags: int = 0) -> str:
        r = await self.conn._call(P.DOMAIN_GET_XML_DESC,
                                  wire.DomainGetXmlDescArgs(self.ref, flags),
                                  wire.DomainGetXmlDescRet)
        return r.xml

    async def is_active(self) -> bool:
        r = await self.conn._call(P.DOMAIN_IS_ACTIVE, wire.DomainIsActiveArgs(self.ref),
                                  wire.DomainIsActiveRet)
        return bool(r.active)

    async def block_info(self, disk: str, flags: int = 0) -> BlockInfo:
        r = await self.conn._call(P.DOMAIN_GET_BLOCK_INFO,
                                  wire.DomainGetBlockInfoArgs(self.ref, disk, flags),
                                  wire.DomainGetBlockInfoRet)
        return BlockInfo(r.capacity, r.allocation, r.physical)

    async def block_stats(self, disk: str) -> BlockStats:
        r = await self.conn._call(P.DOMAIN_BLOCK_STATS, wire.DomainBlockStatsArgs(self.ref, disk),
                                  wire.DomainBlockStatsRet)
        return BlockStats(r.rd_req, r.rd_bytes, r.wr_req, r.wr_bytes, r.errs)

    async def stats(self, stats: int = 0, flags: int = 0) -> dict[str, TypedValue]:
        """This domain's record of :meth:`Connection.get_all_domain_stats`."""
        records = await self.conn.get_all_domain_stats(stats, flags, domains=[self])
        return records.get(self.name, {})

    # ------------------------------------------------------------ lifecycle

    async def start(self, flags: int = 0) -> None:
        """virDomainCreateWithFlags; the handle's ``id`` becomes the running id."""
        r = await self.conn._call(P.DOMAIN_CREATE_WITH_FLAGS,
                                  wire.DomainCreateWithFlagsArgs(self.ref, flags),
                                  wire.DomainCreateWithFlagsRet)
        self.ref = r.dom

    async def destroy(self, flags: int = 0) -> None:
        if flags:
            await self.conn._call(P.DOMAIN_DESTROY_FLAGS,
                                  wire.DomainDestroyFlagsArgs(self.ref, flags))
        else:
            await self.conn._call(P.DOMAIN_DESTROY, wire.DomainDestroyArgs(self.ref))

    async def suspend(self) -> None:
        await self.conn._call(P.DOMAIN_SUSPEND, wire.DomainSuspendArgs(self.ref))

    async def resume(self) -> None:
        await self.conn._call(P.DOMAIN_RESUME, wire.DomainResumeArgs(self.ref))

    async def shutdown(self, flags: int = 0) -> None:
        if flags:
            await self.conn._call(P.DOMAIN_SHUTDOWN_FLAGS,
                                  wire.DomainShutdownFlagsArgs(self.ref, flags))
        else:
            await self.conn._call(P.DOMAIN_SHUTDOWN, wire.DomainShutdownArgs(self.ref))

    async def reboot(self, flags: int = 0) -> None:
        await self.conn._call(P.DOMAIN_REBOOT, wire.DomainRebootArgs(self.ref, flags))

    async def undefine(self, flags: int = 0) -> None:
        if flags:
            await self.conn._call(P.DOMAIN_UNDEFINE_FLAGS,
                                  wire.DomainUndefineFlagsArgs(self.ref, flags))
        else:
            await self.conn._call(P.DOMAIN_UNDEFINE, wire.DomainUndefineArgs(self.ref))

    # ------------------------------------------------------ block threshold

    async def set_block_threshold(
        self, dev: str, threshold: int | None = None, *, percent: float | None = None,
        flags: int = 0,
    ) -> int:
        """Arm the one-shot BLOCK_THRESHOLD event of ``dev`` ("vda", or "vda[1]").

        ``threshold`` is an offset in bytes (0 clears it). With ``percent`` instead, the
        offset is that share of the disk's capacity (from :meth:`block_info`); above
        100 % is refused with InvalidArgError before anything is sent. Returns the
        threshold set, in bytes.
        """
        if (threshold is None) == (percent is None):
            raise TypeError("give either threshold (bytes) or percent, not both")
        if percent is not None:
            thousandths = percent_to_thousandths(percent)
            capacity = (await self.block_info(dev.split("[", 1)[0])).capacity
            threshold = capacity * thousandths // PERCENT_SCALE
        assert threshold is not None
        if threshold < 0:
            raise RemoteError.report(ErrorNumber.INVALID_ARG, ErrorDomain.DOMAIN,
                                     f"negative threshold {threshold}")
        await self.conn._call(P.DOMAIN_SET_BLOCK_THRESHOLD,
                              wire.DomainSetBlockThresholdArgs(self.ref, dev, threshold, flags))
        return threshold

    # ----------------------------------------------------------------- QEMU

    async def qemu_monitor_command(self, command: str, *, hmp: bool = False,
                                   flags: int = 0) -> str:
        """virDomainQemuMonitorCommand: QMP JSON, or a human monitor command with ``hmp``."""
        ref = qemu.NonnullDomain(self.ref.name, self.ref.uuid, self.ref.id)
        args = qemu.DomainMonitorCommandArgs(
            ref, command, flags | (QEMU_MONITOR_COMMAND_HMP if hmp else 0)
        )
        r = await self.conn._call(qemu.Procedure.DOMAIN_MONITOR_COMMAND, args,
                                  qemu.DomainMonitorCommandRet)
        return r.result
