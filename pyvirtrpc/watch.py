"""The thin-provisioning loop: grow a disk before the guest fills it.

A thin disk (a qcow2 image on a block device or in a file that is grown in steps) has a
*physical* size (the device or file) and an *allocation* (the highest host offset written).
For every qcow2 disk of every running domain, and of every domain that starts later, the
:class:`Watcher` arms the disk's block threshold at a *level* below the physical size (a
margin below it, or a percentage of it: :class:`Level`). When a write passes it, the
daemon sends one ``block-threshold`` event; the watcher runs the *extension* (a shell
command given the disk's facts in its environment, or the mock's own grow control), reads
the new physical size and arms again from it. A guest paused by ENOSPC is resumed once its
disk has grown.

It subscribes once per connection, to lifecycle and block-threshold events of all domains.
When the connection is lost it reconnects with exponential backoff, subscribes again,
re-arms every disk, and compares each disk's allocation (``block.N.allocation`` of the
domain stats, or virDomainGetBlockInfo's) with its level, so that writes made while it was
away are caught. Where the driver has no block thresholds (virDomainSetBlockThreshold
answers NoSupportError, as libvirt's test driver does) it polls the allocation every
``poll_interval`` seconds instead, as libvirt's documentation advises.

Everything it does is told to ``report`` as :class:`Report` items (readable lines, or JSON
objects); :meth:`Watcher.summary` gives a row per disk. An async library API (Trio)::

    watcher = Watcher(uri, level=Level(margin=512 * MiB), extend=command_extender(
        'lvextend -L "$NEW_PHYSICAL"b "$DISK_PATH"'), chunk=1 * GiB, report=print)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)     # connected, every disk armed
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from pyvirtrpc.client import Connection, Domain, EventsLost, EventStream, open_connection
from pyvirtrpc.errors import (
    ConnectionClosed,
    Error,
    ErrorNumber,
    NoDomainError,
    NoSupportError,
    OperationInvalidError,
    RemoteError,
)
from pyvirtrpc.events import (
    BlockThresholdEvent,
    ConnectionClosedEvent,
    DomainEventID,
    DomainLifecycle,
    LifecycleEvent,
)
from pyvirtrpc.gen import mockctl
from pyvirtrpc.gen.mockctl import Procedure as M
from pyvirtrpc.gen.remote import NonnullDomain
from pyvirtrpc.scaled import Percent

__all__ = [
    "DiskState",
    "Extender",
    "ExtensionError",
    "Growth",
    "Level",
    "Report",
    "Watcher",
    "command_extender",
    "format_size",
    "format_summary",
    "mock_grow",
    "serves_mockctl",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
STATS_BLOCK = 32  # VIR_DOMAIN_STATS_BLOCK
LIST_ACTIVE = 1  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
PAUSED, PAUSED_IOERROR = 3, 5  # VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_IOERROR
MAX_GROWTH = 1.1  # a qcow2 image never needs more than its capacity and 10 % of metadata
MAX_ROUNDS = 64  # extensions in a row for one check (a write larger than several chunks)
GONE = (NoDomainError, OperationInvalidError)  # the domain went away or stopped meanwhile


def format_size(size: int) -> str:
    """``192.0 KiB``, ``1.5 GiB``: a size for people (binary units, one decimal)."""
    if abs(size) < KiB:
        return f"{size} B"
    exponent = min(int(math.log(abs(size), 1024)), 6)
    return f"{size / 1024**exponent:.1f} {' KMGTPE'[exponent]}iB"


class ExtensionError(Error):
    """The extension (a user command, the mock's grow control) failed."""


@dataclass(frozen=True, slots=True)
class Level:
    """Where a disk's threshold goes: ``margin`` bytes below its physical size, or
    ``percent`` of it (give one)."""

    margin: int | None = None
    percent: Percent | None = None

    def __post_init__(self) -> None:
        if (self.margin is None) == (self.percent is None):
            raise ValueError("give a margin or a percentage, not both")

    def threshold(self, physical: int) -> int:
        """The level for a disk of ``physical`` bytes (0 or less: past already)."""
        if self.percent is not None:
            return self.percent.of(physical)
        assert self.margin is not None
        return physical - self.margin

    def describe(self, physical: int) -> str:
        """``16.0 MiB below 64.0 MiB``, ``80% of 64.0 MiB``."""
        if self.percent is not None:
            return f"{self.percent} of {format_size(physical)}"
        assert self.margin is not None
        return f"{format_size(self.margin)} below {format_size(physical)}"


@dataclass(frozen=True, slots=True)
class Growth:
    """What an extension is asked to do: grow ``dev`` of ``domain`` to ``new_physical``.

    ``threshold`` and ``excess`` come from the event (or, found by a check or a poll, are
    the level and how far the allocation is past it).
    """

    uri: str
    domain: str
    dev: str
    path: str | None
    threshold: int
    excess: int
    capacity: int
    allocation: int
    physical: int
    new_physical: int

    def environ(self) -> dict[str, str]:
        """The environment of an extension command. The image path is ``DISK_PATH``:
        ``PATH`` is the shell's command search path."""
        return {
            "URI": self.uri, "DOMAIN": self.domain, "DEV": self.dev,
            "DISK_PATH": self.path or "", "THRESHOLD": str(self.threshold),
            "EXCESS": str(self.excess), "CAPACITY": str(self.capacity),
            "ALLOCATION": str(self.allocation), "PHYSICAL": str(self.physical),
            "NEW_PHYSICAL": str(self.new_physical),
            "CHUNK": str(self.new_physical - self.physical),
        }


Extender = Callable[[Connection, Growth], Awaitable[str]]
"""Grows a disk as :class:`Growth` says; returns a few words on how (for the reports).
Raises :class:`ExtensionError` (or any pyvirtrpc Error) when it cannot."""


def command_extender(command: str, timeout: float = 120.0) -> Extender:
    """An extension that runs ``/bin/sh -c COMMAND`` with :meth:`Growth.environ` added to
    its environment; a non-zero exit status, or a run longer than ``timeout`` seconds,
    is a failure."""

    async def extend(conn: Connection, growth: Growth) -> str:
        env = {**os.environ, **growth.environ()}
        try:
            with trio.fail_after(timeout):
                done = await trio.run_process(
                    ["/bin/sh", "-c", command], env=env, check=False,
                    stdin=b"", capture_stdout=True, capture_stderr=True,
                )
        except trio.TooSlowError:
            raise ExtensionError(f"the extension command ran longer than {timeout:g} s") \
                from None
        except OSError as exc:
            raise ExtensionError(f"cannot run the extension command: {exc}") from None
        if done.returncode:
            output = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise ExtensionError(
                f"the extension command exited with status {done.returncode}"
                + (f": {output.splitlines()[-1]}" if output else "")
            )
        return "command"

    return extend


async def mock_grow(conn: Connection, growth: Growth) -> str:
    """The mock libvirtd's own grow control (mockctl DISK_GROW): sets the new size."""
    await conn.call(mockctl.PROCEDURES[M.DISK_GROW],
                    mockctl.DiskGrowArgs(growth.domain, growth.dev, growth.new_physical))
    return "mock grow"


async def serves_mockctl(conn: Connection) -> bool:
    """True if the daemon is pyvirtrpc's mock (it serves the mockctl program)."""
    try:
        await conn.call(mockctl.PROCEDURES[M.DISK_GET_INFO], mockctl.DiskGetInfoArgs("", ""))
    except RemoteError as exc:
        return exc.code != ErrorNumber.RPC  # RPC: "Cannot find program ..."
    return True


@dataclass(frozen=True, slots=True)
class Report:
    """One thing the watcher did or saw; ``kind`` is a word such as ``armed``."""

    kind: str
    message: str
    domain: str | None = None
    dev: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @property
    def subject(self) -> str:
        return f"{self.domain}/{self.dev}" if self.dev else (self.domain or "")

    def text(self) -> str:
        """One line for people: ``12:00:00.123  armed      demo/vda  at 48.0 MiB ...``."""
        clock = datetime.datetime.fromtimestamp(self.time).strftime("%H:%M:%S.%f")[:-3]
        subject = f"{self.subject}  " if self.subject else ""
        return f"{clock}  {self.kind:<10} {subject}{self.message}"

    def json(self) -> dict[str, Any]:
        when = datetime.datetime.fromtimestamp(self.time, datetime.UTC)
        out: dict[str, Any] = {"time": when.isoformat(timespec="milliseconds"),
                               "kind": self.kind}
        if self.domain is not None:
            out["domain"] = self.domain
        if self.dev is not None:
            out["dev"] = self.dev
        out.update(self.data)
        out["message"] = self.message
        return out


@dataclass(eq=False)
class DiskState:
    """One watched disk: what the watcher knows of it, and what it did (the summary row).

    ``mode`` is ``event`` (block thresholds) or ``poll`` (the driver has none);
    ``armed`` the threshold set and not yet fired.
    """

    domain: str
    dev: str
    path: str | None
    mode: str = "event"
    active: bool = True
    events: int = 0
    polls: int = 0
    extensions: int = 0
    failures: int = 0
    capacity: int = 0
    allocation: int = 0
    physical: int = 0
    armed: int | None = None
    ref: NonnullDomain | None = field(default=None, repr=False)  # the domain's handle
    lock: trio.Lock = field(default_factory=trio.Lock, repr=False)

    def row(self) -> dict[str, Any]:
        return {"domain": self.domain, "dev": self.dev, "path": self.path, "mode": self.mode,
                "events": self.events, "polls": self.polls, "extensions": self.extensions,
                "failures": self.failures, "capacity": self.capacity,
                "allocation": self.allocation, "physical": self.physical}


SUMMARY_COLUMNS = ("DOMAIN", "DISK", "MODE", "EVENTS", "POLLS", "EXTENSIONS", "FAILED",
                   "PHYSICAL")


def format_summary(disks: list[DiskState]) -> str:
    """The table printed at exit: a row per disk, sizes for people and in bytes."""
    rows = [SUMMARY_COLUMNS] + [
        (d.domain, d.dev, d.mode, str(d.events), str(d.polls), str(d.extensions),
         str(d.failures), f"{format_size(d.physical)} ({d.physical})")
        for d in disks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) if i < 3 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        cells[-1] = row[-1].ljust(widths[-1])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def thin_disks(xml: str) -> list[tuple[str, str | None]]:
    """(target, source path) of each qcow2 disk of a domain XML, file or block device.

    Only qcow2 images are thin: a raw image is as large as the disk from the start.
    """
    disks = []
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        driver, target, source = disk.find("driver"), disk.find("target"), disk.find("source")
        if (disk.get("device", "disk") != "disk" or disk.get("type", "file") not in
                ("file", "block") or driver is None or driver.get("type") != "qcow2"
                or target is None or target.get("dev") is None):
            continue
        path = None if source is None else source.get("file") or source.get("dev")
        disks.append((target.get("dev", ""), path))
    return disks


class Watcher:
    """The loop of the module docstring, on the daemon at ``uri``.

    ``level``: where thresholds go; ``extend``: how disks grow (:func:`command_extender`,
    :func:`mock_grow`); ``chunk``: how much each extension adds (the new size is told to
    the extension; a disk is never grown past 110 % of its capacity); ``poll_interval``:
    seconds between allocation checks where the driver has no thresholds; ``backoff``:
    first and longest wait before reconnecting; ``domains``: watch only these (names);
    ``report``: called with every :class:`Report`.
    """

    def __init__(
        self,
        uri: str | None,
        *,
        level: Level,
        extend: Extender,
        chunk: int = 1 * GiB,
        poll_interval: float = 5.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        domains: set[str] | None = None,
        report: Callable[[Report], None] | None = None,
    ) -> None:
        if chunk <= 0:
            raise ValueError("the extension chunk must be positive")
        self.uri = uri
        self.level = level
        self.extend = extend
        self.chunk = chunk
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.domains = domains
        self._report = report
        self.disks: dict[tuple[bytes, str], DiskState] = {}
        self.connections = 0  # sessions so far (1 + reconnections)
        self._connected_uri = uri or ""
        self._status: trio.TaskStatus[None] | None = None

    # ---------------------------------------------------------------- reports

    def report(self, kind: str, message: str, disk: DiskState | None = None,
               domain: str | None = None, **data: Any) -> None:
        if self._report is not None:
            self._report(Report(kind, message, disk.domain if disk else domain,
                                disk.dev if disk else None, data))

    def summary(self) -> list[DiskState]:
        """Every disk watched so far, in the order they were found."""
        return list(self.disks.values())

    # ---------------------------------------------------------------- sessions

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch until cancelled; ``started`` once connected with every disk armed."""
        delay = self.backoff[0]
        self._status = task_status
        while True:
            try:
                async with open_connection(self.uri) as conn:
                    delay = self.backoff[0]
                    await self._session(conn)
                    reason = "the daemon closed the connection"
            except (ConnectionClosed, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            except RemoteError as exc:
                if exc.code not in (ErrorNumber.NO_CONNECT, ErrorNumber.SYSTEM_ERROR):
                    raise
                reason = str(exc)
            self.report("lost", f"{reason}; connecting again in {delay:g} s",
                        uri=self._connected_uri, retry_in=delay)
            await trio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _session(self, conn: Connection) -> None:
        """One connection's life: subscribe, arm everything, follow events until it ends."""
        self.connections += 1
        self._connected_uri = conn.uri or self.uri or ""
        driver = await conn.get_type()
        for disk in self.disks.values():
            disk.active, disk.armed = False, None
        self.report("connected", f"{self._connected_uri} (driver {driver})",
                    uri=self._connected_uri, driver=driver, connection=self.connections)
        async with conn.domain_events(DomainEventID.LIFECYCLE, DomainEventID.BLOCK_THRESHOLD
                                      ) as events, trio.open_nursery() as nursery:
            with contextlib.suppress(ConnectionClosed):
                await self._follow(conn, nursery, events)
            nursery.cancel_scope.cancel()

    async def _follow(self, conn: Connection, nursery: trio.Nursery, events: EventStream
                      ) -> None:
        for domain in await conn.list_domains(LIST_ACTIVE):
            await self._guard(nursery, self._watch_domain(domain))
        nursery.start_soon(self._poll_loop, conn, nursery)
        if self._status is not None:  # the first connection is up, its disks armed
            self._status.started()
            self._status = None
        async for item in events:
            if isinstance(item, ConnectionClosedEvent):
                return
            if isinstance(item, EventsLost):  # none may be missed: check every disk
                self.report("lost", f"{item.count} events not read in time; checking "
                            "every disk", lost_events=item.count)
                for disk in self.disks.values():
                    if disk.active:
                        nursery.start_soon(self._guard, nursery, self._recheck(conn, disk))
            elif isinstance(item, LifecycleEvent):
                self._on_lifecycle(conn, nursery, item)
            elif isinstance(item, BlockThresholdEvent):
                self._on_threshold(conn, nursery, item)

    async def _guard(self, nursery: trio.Nursery, work: Awaitable[None]) -> None:
        """Run one piece of work: a lost connection ends the session (and the watcher
        reconnects); any other error is reported and the watcher carries on."""
        try:
            await work
        except ConnectionClosed:
            nursery.cancel_scope.cancel()
        except Error as exc:
            self.report("error", str(exc), error=type(exc).__name__)

    # ---------------------------------------------------------------- domains

    async def _watch_domain(self, domain: Domain) -> None:
        if self.domains is not None and domain.name not in self.domains:
            return
        try:
            xml = await domain.xml_desc()
        except GONE:
            return
        for dev, path in thin_disks(xml):
            key = (domain.ref.uuid, dev)
            disk = self.disks.get(key)
            if disk is None:
                disk = self.disks[key] = DiskState(domain.name, dev, path)
            disk.active, disk.path, disk.ref = True, path, domain.ref
            async with disk.lock:
                await self._sizes(domain, disk)
                self.report(
                    "watching",
                    f"{path}: capacity {format_size(disk.capacity)}, physical "
                    f"{format_size(disk.physical)}, allocation {format_size(disk.allocation)}",
                    disk, path=path, capacity=disk.capacity, physical=disk.physical,
                    allocation=disk.allocation,
                )
                await self._check(domain, disk, None)

    def _on_lifecycle(self, conn: Connection, nursery: trio.Nursery,
                            event: LifecycleEvent) -> None:
        if event.event == DomainLifecycle.STARTED:
            domain = Domain(conn, event.domain)
            nursery.start_soon(self._guard, nursery, self._watch_domain(domain))
        elif event.event in (DomainLifecycle.STOPPED, DomainLifecycle.CRASHED):
            stopped = [d for (uuid, _), d in self.disks.items()
                       if uuid == event.domain.uuid and d.active]
            for disk in stopped:
                disk.active, disk.armed = False, None
            if stopped:
                self.report("stopped", "domain stopped: its disks are no longer watched",
                            domain=event.domain.name)

    def _on_threshold(self, conn: Connection, nursery: trio.Nursery,
                      event: BlockThresholdEvent) -> None:
        dev = event.dev.partition("[")[0]  # "vda[1]" is the top image of vda
        disk = self.disks.get((event.domain.uuid, dev))
        if disk is None or not disk.active:
            return
        nursery.start_soon(self._guard, nursery,
                           self._fired(Domain(conn, event.domain), disk, event))

    async def _fired(self, domain: Domain, disk: DiskState, event: BlockThresholdEvent) -> None:
        async with disk.lock:
            if disk.armed != event.threshold:
                return  # the same crossing told again (as vda[1]), or a stale one
            disk.armed = None
            disk.events += 1
            self.report(
                "event",
                f"block-threshold: a write passed {format_size(event.threshold)} by "
                f"{format_size(event.excess)}",
                disk, threshold=event.threshold, excess=event.excess, event_dev=event.dev,
            )
            await self._check(domain, disk, (event.threshold, event.excess))

    # ---------------------------------------------------------------- disks

    async def _sizes(self, domain: Domain, disk: DiskState) -> None:
        """Capacity, allocation and physical size now; the allocation from the domain
        stats (the highest offset written) where the driver has them."""
        info = await domain.block_info(disk.dev)
        disk.capacity, disk.physical, disk.allocation = (
            info.capacity, info.physical, info.allocation)
        stats = await domain.stats(STATS_BLOCK)
        for n in range(int(stats.get("block.count", 0))):
            if stats.get(f"block.{n}.name") == disk.dev:
                allocation = stats.get(f"block.{n}.allocation")
                if isinstance(allocation, int):
                    disk.allocation = allocation
                break

    async def _check(self, domain: Domain, disk: DiskState,
                     fired: tuple[int, int] | None) -> None:
        """Extend while the allocation is past the level, then arm the threshold.

        ``fired``: (threshold, excess) of the event that brought us here. Holds the lock.
        """
        for _ in range(MAX_ROUNDS):
            if fired is None:
                await self._sizes(domain, disk)
                level = self.level.threshold(disk.physical)
                if disk.allocation <= level:
                    await self._arm(domain, disk, level)
                    return
                fired = (level, disk.allocation - level)
                self.report(
                    "past",
                    f"allocation {format_size(disk.allocation)} is past the level"
                    + (f" {format_size(level)}" if level > 0 else "")
                    + f" ({self.level.describe(disk.physical)})",
                    disk, allocation=disk.allocation, level=level, physical=disk.physical,
                )
            else:
                await self._sizes(domain, disk)
            if not await self._extend(domain, disk, *fired):
                await self._arm(domain, disk, self.level.threshold(disk.physical))
                return
            fired = None

    async def _arm(self, domain: Domain, disk: DiskState, level: int) -> None:
        if disk.mode == "poll" or level <= 0:
            return
        try:
            disk.armed = await domain.set_block_threshold(disk.dev, level)
        except NoSupportError as exc:
            disk.mode = "poll"
            self.report("polling", f"no block thresholds here ({exc}); checking the "
                        f"allocation every {self.poll_interval:g} s", disk,
                        interval=self.poll_interval)
            return
        self.report(
            "armed",
            f"at {format_size(level)} ({self.level.describe(disk.physical)}); "
            f"allocation {format_size(disk.allocation)}",
            disk, threshold=level, physical=disk.physical, allocation=disk.allocation,
        )

    async def _extend(self, domain: Domain, disk: DiskState, threshold: int,
                      excess: int) -> bool:
        """Run the extension; True if the disk grew."""
        limit = int(disk.capacity * MAX_GROWTH)
        if disk.physical >= limit:
            self.report("full", f"physical size {format_size(disk.physical)} is the most "
                        f"it needs ({format_size(limit)}); not extended", disk,
                        physical=disk.physical)
            return False
        before = disk.physical
        growth = Growth(
            self._connected_uri, domain.name, disk.dev, disk.path, threshold, excess,
            disk.capacity, disk.allocation, before, min(before + self.chunk, limit),
        )
        started = time.monotonic()
        try:
            how = await self.extend(domain.conn, growth)
            await self._sizes(domain, disk)
        except ConnectionClosed:
            raise
        except (Error, OSError) as exc:
            disk.failures += 1
            self.report("failed", f"extension failed: {exc}", disk, error=str(exc))
            return False
        if disk.physical <= before:
            disk.failures += 1
            self.report("failed", f"the extension did not grow the disk (physical size "
                        f"still {format_size(disk.physical)})", disk, physical=disk.physical)
            return False
        disk.extensions += 1
        self.report(
            "extended",
            f"{format_size(before)} -> {format_size(disk.physical)} by {how} in "
            f"{(time.monotonic() - started) * 1000:.0f} ms",
            disk, before=before, physical=disk.physical, allocation=disk.allocation,
            extensions=disk.extensions,
        )
        state, reason = await domain.state()
        if (state, reason) == (PAUSED, PAUSED_IOERROR):
            await domain.resume()
            self.report("resumed", "the guest, paused when its disk was full, runs again",
                        domain=domain.name)
        return True

    async def _recheck(self, conn: Connection, disk: DiskState) -> None:
        assert disk.ref is not None
        async with disk.lock:
            await self._check(Domain(conn, disk.ref), disk, None)

    async def _poll_loop(self, conn: Connection, nursery: trio.Nursery) -> None:
        """Where the driver has no thresholds: check the allocation at an interval."""
        while True:
            await trio.sleep(self.poll_interval)
            for disk in list(self.disks.values()):
                if disk.mode == "poll" and disk.active:
                    disk.polls += 1
                    await self._guard(nursery, self._recheck(conn, disk))
