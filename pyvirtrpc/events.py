"""Typed events, and their wire forms in both directions.

Clients decode event MESSAGEs into these classes; servers encode backend events from
them. Field names are the wire fields in snake case (``devAlias`` becomes ``dev_alias``),
with ``dom`` named ``domain`` and ``net`` named ``network``.

libvirt sends a domain event in one of two forms: *legacy* (IDs 0-15 only, no callback
ID: procedures 107, 169-173, ...) or *callback* (procedures 318-333 wrap the legacy body
after a callback ID; newer events, 339 and up, carry the callback ID as their first
field). Network, storage pool, node device and secret events only have the callback form.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pyvirtrpc.errors import ProtocolError
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.xdr import StructType, XdrStruct


class DomainEventID(enum.IntEnum):
    """libvirt's VIR_DOMAIN_EVENT_ID_* numbers."""

    LIFECYCLE = 0
    REBOOT = 1
    RTC_CHANGE = 2
    WATCHDOG = 3
    IO_ERROR = 4
    GRAPHICS = 5
    IO_ERROR_REASON = 6
    CONTROL_ERROR = 7
    BLOCK_JOB = 8
    DISK_CHANGE = 9
    TRAY_CHANGE = 10
    PMWAKEUP = 11
    PMSUSPEND = 12
    BALLOON_CHANGE = 13
    PMSUSPEND_DISK = 14
    DEVICE_REMOVED = 15
    BLOCK_JOB_2 = 16
    TUNABLE = 17
    AGENT_LIFECYCLE = 18
    DEVICE_ADDED = 19
    MIGRATION_ITERATION = 20
    JOB_COMPLETED = 21
    DEVICE_REMOVAL_FAILED = 22
    METADATA_CHANGE = 23
    BLOCK_THRESHOLD = 24
    MEMORY_FAILURE = 25
    MEMORY_DEVICE_SIZE_CHANGE = 26


LEGACY_EVENT_IDS = frozenset(range(DomainEventID.DEVICE_REMOVED + 1))
"""Event IDs a server accepts through the legacy registration (167)."""


class NetworkEventID(enum.IntEnum):
    LIFECYCLE = 0


class StoragePoolEventID(enum.IntEnum):
    LIFECYCLE = 0
    REFRESH = 1


class NodeDeviceEventID(enum.IntEnum):
    LIFECYCLE = 0
    UPDATE = 1


class SecretEventID(enum.IntEnum):
    LIFECYCLE = 0
    VALUE_CHANGED = 1


class DomainLifecycle(enum.IntEnum):
    """The ``event`` of a LifecycleEvent (VIR_DOMAIN_EVENT_*)."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5
    SHUTDOWN = 6
    PMSUSPENDED = 7
    CRASHED = 8


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""


# ----------------------------------------------------------------- domain events


@dataclass(frozen=True, slots=True)
class DomainEvent(Event):
    event_id: ClassVar[DomainEventID]
    domain: wire.NonnullDomain


@dataclass(frozen=True, slots=True)
class LifecycleEvent(DomainEvent):
    event_id = DomainEventID.LIFECYCLE
    event: int
    detail: int


@dataclass(frozen=True, slots=True)
class RebootEvent(DomainEvent):
    event_id = DomainEventID.REBOOT


@dataclass(frozen=True, slots=True)
class RtcChangeEvent(DomainEvent):
    event_id = DomainEventID.RTC_CHANGE
    offset: int


@dataclass(frozen=True, slots=True)
class WatchdogEvent(DomainEvent):
    event_id = DomainEventID.WATCHDOG
    action: int


@dataclass(frozen=True, slots=True)
class IoErrorEvent(DomainEvent):
    event_id = DomainEventID.IO_ERROR
    src_path: str
    dev_alias: str
    action: int


@dataclass(frozen=True, slots=True)
class GraphicsEvent(DomainEvent):
    event_id = DomainEventID.GRAPHICS
    phase: int
    local: wire.DomainEventGraphicsAddress
    remote: wire.DomainEventGraphicsAddress
    auth_scheme: str
    subject: list[wire.DomainEventGraphicsIdentity]


@dataclass(frozen=True, slots=True)
class IoErrorReasonEvent(DomainEvent):
    event_id = DomainEventID.IO_ERROR_REASON
    src_path: str
    dev_alias: str
    action: int
    reason: str


@dataclass(frozen=True, slots=True)
class ControlErrorEvent(DomainEvent):
    event_id = DomainEventID.CONTROL_ERROR


@dataclass(frozen=True, slots=True)
class BlockJobEvent(DomainEvent):
    event_id = DomainEventID.BLOCK_JOB
    path: str
    type: int
    status: int


@dataclass(frozen=True, slots=True)
class DiskChangeEvent(DomainEvent):
    event_id = DomainEventID.DISK_CHANGE
    old_src_path: str | None
    new_src_path: str | None
    dev_alias: str
    reason: int


@dataclass(frozen=True, slots=True)
class TrayChangeEvent(DomainEvent):
    event_id = DomainEventID.TRAY_CHANGE
    dev_alias: str
    reason: int


@dataclass(frozen=True, slots=True)
class PMWakeupEvent(DomainEvent):
    event_id = DomainEventID.PMWAKEUP
    reason: int = 0  # only the callback form carries it


@dataclass(frozen=True, slots=True)
class PMSuspendEvent(DomainEvent):
    event_id = DomainEventID.PMSUSPEND
    reason: int = 0


@dataclass(frozen=True, slots=True)
class BalloonChangeEvent(DomainEvent):
    event_id = DomainEventID.BALLOON_CHANGE
    actual: int


@dataclass(frozen=True, slots=True)
class PMSuspendDiskEvent(DomainEvent):
    event_id = DomainEventID.PMSUSPEND_DISK
    reason: int = 0


@dataclass(frozen=True, slots=True)
class DeviceRemovedEvent(DomainEvent):
    event_id = DomainEventID.DEVICE_REMOVED
    dev_alias: str


@dataclass(frozen=True, slots=True)
class BlockJob2Event(DomainEvent):
    event_id = DomainEventID.BLOCK_JOB_2
    dst: str
    type: int
    status: int


@dataclass(frozen=True, slots=True)
class TunableEvent(DomainEvent):
    event_id = DomainEventID.TUNABLE
    params: list[wire.TypedParam]


@dataclass(frozen=True, slots=True)
class AgentLifecycleEvent(DomainEvent):
    event_id = DomainEventID.AGENT_LIFECYCLE
    state: int
    reason: int


@dataclass(frozen=True, slots=True)
class DeviceAddedEvent(DomainEvent):
    event_id = DomainEventID.DEVICE_ADDED
    dev_alias: str


@dataclass(frozen=True, slots=True)
class MigrationIterationEvent(DomainEvent):
    event_id = DomainEventID.MIGRATION_ITERATION
    iteration: int


@dataclass(frozen=True, slots=True)
class JobCompletedEvent(DomainEvent):
    event_id = DomainEventID.JOB_COMPLETED
    params: list[wire.TypedParam]


@dataclass(frozen=True, slots=True)
class DeviceRemovalFailedEvent(DomainEvent):
    event_id = DomainEventID.DEVICE_REMOVAL_FAILED
    dev_alias: str


@dataclass(frozen=True, slots=True)
class MetadataChangeEvent(DomainEvent):
    event_id = DomainEventID.METADATA_CHANGE
    type: int
    nsuri: str | None


@dataclass(frozen=True, slots=True)
class BlockThresholdEvent(DomainEvent):
    """A write passed the threshold set on ``dev`` (which may be ``vda[N]``)."""

    event_id = DomainEventID.BLOCK_THRESHOLD
    dev: str
    path: str | None
    threshold: int
    excess: int


@dataclass(frozen=True, slots=True)
class MemoryFailureEvent(DomainEvent):
    event_id = DomainEventID.MEMORY_FAILURE
    recipient: int
    action: int
    flags: int


@dataclass(frozen=True, slots=True)
class MemoryDeviceSizeChangeEvent(DomainEvent):
    event_id = DomainEventID.MEMORY_DEVICE_SIZE_CHANGE
    alias: str
    size: int


# ------------------------------------------------------------------ other events


@dataclass(frozen=True, slots=True)
class NetworkLifecycleEvent(Event):
    event_id: ClassVar[NetworkEventID] = NetworkEventID.LIFECYCLE
    network: wire.NonnullNetwork
    event: int
    detail: int


@dataclass(frozen=True, slots=True)
class StoragePoolLifecycleEvent(Event):
    event_id: ClassVar[StoragePoolEventID] = StoragePoolEventID.LIFECYCLE
    pool: wire.NonnullStoragePool
    event: int
    detail: int


@dataclass(frozen=True, slots=True)
class StoragePoolRefreshEvent(Event):
    event_id: ClassVar[StoragePoolEventID] = StoragePoolEventID.REFRESH
    pool: wire.NonnullStoragePool


@dataclass(frozen=True, slots=True)
class NodeDeviceLifecycleEvent(Event):
    event_id: ClassVar[NodeDeviceEventID] = NodeDeviceEventID.LIFECYCLE
    dev: wire.NonnullNodeDevice
    event: int
    detail: int


@dataclass(frozen=True, slots=True)
class NodeDeviceUpdateEvent(Event):
    event_id: ClassVar[NodeDeviceEventID] = NodeDeviceEventID.UPDATE
    dev: wire.NonnullNodeDevice


@dataclass(frozen=True, slots=True)
class SecretLifecycleEvent(Event):
    event_id: ClassVar[SecretEventID] = SecretEventID.LIFECYCLE
    secret: wire.NonnullSecret
    event: int
    detail: int


@dataclass(frozen=True, slots=True)
class SecretValueChangedEvent(Event):
    event_id: ClassVar[SecretEventID] = SecretEventID.VALUE_CHANGED
    secret: wire.NonnullSecret


@dataclass(frozen=True, slots=True)
class ConnectionClosedEvent(Event):
    """The server's connection to its hypervisor closed (VIR_CONNECT_CLOSE_REASON_*)."""

    reason: int


# ---------------------------------------------------------------- event families


class EventFamily(enum.Enum):
    """The kinds of objects whose events a client registers for (values: libvirt's words)."""

    DOMAIN = "domain"
    NETWORK = "network"
    STORAGE_POOL = "storage pool"
    NODE_DEVICE = "node device"
    SECRET = "secret"


@dataclass(frozen=True, slots=True)
class FamilyInfo:
    """How a client registers for one family's events (the callback-ID form).

    ``register`` takes (eventID, object filter or None) and returns a callbackID;
    ``deregister`` takes the callbackID. A registration with a filter wants only the
    events of that object, told apart by :meth:`key`.
    """

    family: EventFamily
    ids: type[enum.IntEnum]  # the family's event IDs
    register: P
    deregister: P
    events: tuple[type[Event], ...]  # its event classes (and their subclasses)
    args_field: str  # the object filter's field in the register args
    event_field: str  # the object's field in the family's events
    by_name: bool = False  # objects told apart by name (node devices), not by UUID

    @property
    def register_args(self) -> Callable[..., XdrStruct]:
        return _args(self.register)

    @property
    def register_ret(self) -> Callable[..., XdrStruct]:
        ret = wire.PROCEDURES[self.register].ret
        assert ret is not None
        return ret

    @property
    def deregister_args(self) -> Callable[..., XdrStruct]:
        return _args(self.deregister)

    def key(self, obj: Any) -> str | None:
        """The filter key of an object of the family (its UUID in hex or its name);
        None for None (no filter)."""
        if obj is None:
            return None
        return str(obj.name) if self.by_name else bytes(obj.uuid).hex()

    def args_key(self, args: Any) -> str | None:
        """The filter key of ``register`` arguments."""
        return self.key(getattr(args, self.args_field))

    def event_key(self, event: Event) -> str | None:
        """The key of the object ``event`` is about."""
        return self.key(getattr(event, self.event_field))


FAMILIES: dict[EventFamily, FamilyInfo] = {
    info.family: info for info in (
        FamilyInfo(EventFamily.DOMAIN, DomainEventID,
                   P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                   P.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
                   (DomainEvent,), "dom", "domain"),
        FamilyInfo(EventFamily.NETWORK, NetworkEventID,
                   P.CONNECT_NETWORK_EVENT_REGISTER_ANY,
                   P.CONNECT_NETWORK_EVENT_DEREGISTER_ANY,
                   (NetworkLifecycleEvent,), "net", "network"),
        FamilyInfo(EventFamily.STORAGE_POOL, StoragePoolEventID,
                   P.CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY,
                   P.CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY,
                   (StoragePoolLifecycleEvent, StoragePoolRefreshEvent), "pool", "pool"),
        FamilyInfo(EventFamily.NODE_DEVICE, NodeDeviceEventID,
                   P.CONNECT_NODE_DEVICE_EVENT_REGISTER_ANY,
                   P.CONNECT_NODE_DEVICE_EVENT_DEREGISTER_ANY,
                   (NodeDeviceLifecycleEvent, NodeDeviceUpdateEvent), "dev", "dev",
                   by_name=True),
        FamilyInfo(EventFamily.SECRET, SecretEventID,
                   P.CONNECT_SECRET_EVENT_REGISTER_ANY,
                   P.CONNECT_SECRET_EVENT_DEREGISTER_ANY,
                   (SecretLifecycleEvent, SecretValueChangedEvent), "secret", "secret"),
    )
}


def family_of(event: Event) -> FamilyInfo | None:
    """The family ``event`` belongs to (None for ConnectionClosedEvent)."""
    for info in FAMILIES.values():
        if isinstance(event, info.events):
            return info
    return None


def _args(proc: P) -> type[XdrStruct]:
    args = wire.PROCEDURES[proc].args
    assert args is not None
    return args


# ------------------------------------------------------------------- wire forms

# event class -> (legacy procedure or None, callback procedure)
WIRE: dict[type[Event], tuple[P | None, P]] = {
    LifecycleEvent: (P.DOMAIN_EVENT_LIFECYCLE, P.DOMAIN_EVENT_CALLBACK_LIFECYCLE),
    RebootEvent: (P.DOMAIN_EVENT_REBOOT, P.DOMAIN_EVENT_CALLBACK_REBOOT),
    RtcChangeEvent: (P.DOMAIN_EVENT_RTC_CHANGE, P.DOMAIN_EVENT_CALLBACK_RTC_CHANGE),
    WatchdogEvent: (P.DOMAIN_EVENT_WATCHDOG, P.DOMAIN_EVENT_CALLBACK_WATCHDOG),
    IoErrorEvent: (P.DOMAIN_EVENT_IO_ERROR, P.DOMAIN_EVENT_CALLBACK_IO_ERROR),
    GraphicsEvent: (P.DOMAIN_EVENT_GRAPHICS, P.DOMAIN_EVENT_CALLBACK_GRAPHICS),
    IoErrorReasonEvent: (
        P.DOMAIN_EVENT_IO_ERROR_REASON,
        P.DOMAIN_EVENT_CALLBACK_IO_ERROR_REASON,
    ),
    ControlErrorEvent: (P.DOMAIN_EVENT_CONTROL_ERROR, P.DOMAIN_EVENT_CALLBACK_CONTROL_ERROR),
    BlockJobEvent: (P.DOMAIN_EVENT_BLOCK_JOB, P.DOMAIN_EVENT_CALLBACK_BLOCK_JOB),
    DiskChangeEvent: (P.DOMAIN_EVENT_DISK_CHANGE, P.DOMAIN_EVENT_CALLBACK_DISK_CHANGE),
    TrayChangeEvent: (P.DOMAIN_EVENT_TRAY_CHANGE, P.DOMAIN_EVENT_CALLBACK_TRAY_CHANGE),
    PMWakeupEvent: (P.DOMAIN_EVENT_PMWAKEUP, P.DOMAIN_EVENT_CALLBACK_PMWAKEUP),
    PMSuspendEvent: (P.DOMAIN_EVENT_PMSUSPEND, P.DOMAIN_EVENT_CALLBACK_PMSUSPEND),
    BalloonChangeEvent: (P.DOMAIN_EVENT_BALLOON_CHANGE, P.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE),
    PMSuspendDiskEvent: (P.DOMAIN_EVENT_PMSUSPEND_DISK, P.DOMAIN_EVENT_CALLBACK_PMSUSPEND_DISK),
    DeviceRemovedEvent: (P.DOMAIN_EVENT_DEVICE_REMOVED, P.DOMAIN_EVENT_CALLBACK_DEVICE_REMOVED),
    BlockJob2Event: (None, P.DOMAIN_EVENT_BLOCK_JOB_2),
    TunableEvent: (None, P.DOMAIN_EVENT_CALLBACK_TUNABLE),
    AgentLifecycleEvent: (None, P.DOMAIN_EVENT_CALLBACK_AGENT_LIFECYCLE),
    DeviceAddedEvent: (None, P.DOMAIN_EVENT_CALLBACK_DEVICE_ADDED),
    MigrationIterationEvent: (None, P.DOMAIN_EVENT_CALLBACK_MIGRATION_ITERATION),
    JobCompletedEvent: (None, P.DOMAIN_EVENT_CALLBACK_JOB_COMPLETED),
    DeviceRemovalFailedEvent: (None, P.DOMAIN_EVENT_CALLBACK_DEVICE_REMOVAL_FAILED),
    MetadataChangeEvent: (None, P.DOMAIN_EVENT_CALLBACK_METADATA_CHANGE),
    BlockThresholdEvent: (None, P.DOMAIN_EVENT_BLOCK_THRESHOLD),
    MemoryFailureEvent: (None, P.DOMAIN_EVENT_MEMORY_FAILURE),
    MemoryDeviceSizeChangeEvent: (None, P.DOMAIN_EVENT_MEMORY_DEVICE_SIZE_CHANGE),
    NetworkLifecycleEvent: (None, P.NETWORK_EVENT_LIFECYCLE),
    StoragePoolLifecycleEvent: (None, P.STORAGE_POOL_EVENT_LIFECYCLE),
    StoragePoolRefreshEvent: (None, P.STORAGE_POOL_EVENT_REFRESH),
    NodeDeviceLifecycleEvent: (None, P.NODE_DEVICE_EVENT_LIFECYCLE),
    NodeDeviceUpdateEvent: (None, P.NODE_DEVICE_EVENT_UPDATE),
    SecretLifecycleEvent: (None, P.SECRET_EVENT_LIFECYCLE),
    SecretValueChangedEvent: (None, P.SECRET_EVENT_VALUE_CHANGED),
    ConnectionClosedEvent: (None, P.CONNECT_EVENT_CONNECTION_CLOSED),
}

DOMAIN_EVENT_CLASSES: dict[DomainEventID, type[DomainEvent]] = {
    cls.event_id: cls for cls in WIRE if issubclass(cls, DomainEvent)
}

_BY_PROC: dict[int, type[Event]] = {}
for _cls, (_legacy, _callback) in WIRE.items():
    _BY_PROC[_callback] = _cls
    if _legacy is not None:
        _BY_PROC[_legacy] = _cls

_RENAMED = {"dom": "domain", "net": "network"}


def _python_name(wire_name: str) -> str:
    name = _RENAMED.get(wire_name)
    return name or re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", wire_name).lower()


def _fields(cls: type[XdrStruct]) -> tuple[tuple[str, Any], ...]:
    t = cls.xdr_type
    assert isinstance(t, StructType)
    return t.fields


def decode_event(proc: int, payload: bytes) -> tuple[int | None, Event]:
    """Decode a REMOTE program event MESSAGE into ``(callback ID or None, event)``."""
    cls = _BY_PROC.get(proc)
    if cls is None:
        raise ProtocolError(f"procedure {proc} is not an event we know")
    msg_cls = _args(P(proc))
    msg = msg_cls.decode(payload)
    values: dict[str, Any] = {}
    callback_id: int | None = None
    for name, _ in _fields(msg_cls):
        value = getattr(msg, name)
        if name == "callbackID":
            callback_id = value
        elif name == "msg":  # the callback form wrapping a legacy body
            for inner, _ in _fields(type(value)):
                values[_python_name(inner)] = getattr(value, inner)
        else:
            values[_python_name(name)] = value
    return callback_id, cls(**values)


def encode_event(event: Event, callback_id: int | None) -> tuple[P, bytes]:
    """The procedure and payload of ``event``: legacy form when ``callback_id`` is None."""
    legacy, callback = WIRE[type(event)]
    if callback_id is None and legacy is None and not isinstance(event, ConnectionClosedEvent):
        raise ValueError(f"{type(event).__name__} has no legacy form")
    proc = legacy if callback_id is None and legacy is not None else callback
    return proc, _build(_args(proc), event, callback_id).encode()


def _build(msg_cls: type[XdrStruct], event: Event, callback_id: int | None) -> XdrStruct:
    values: dict[str, Any] = {}
    for name, t in _fields(msg_cls):
        if name == "callbackID":
            values[name] = callback_id
        elif name == "msg":
            values[name] = _build(t.cls, event, None)
        else:
            values[name] = getattr(event, _python_name(name))
    return msg_cls(**values)
