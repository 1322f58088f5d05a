"""Events as ``virsh event`` prints them, and as JSON objects.

``format_event`` gives, byte for byte, what virsh 9.0 prints for an event in the C locale
(``virsh event`` for domain events; ``net-event``, ``pool-event``, ``nodedev-event`` and
``secret-event`` for the others), optionally after virsh's ``--timestamp`` prefix. An event's
text ends with a newline; a few events (graphics with identities, tunable, job-completed,
memory-failure, memory-device-size-change) take several lines, and only the first carries
the timestamp. ``format_summary`` and ``format_disconnect`` give what virsh prints when it
stops listening. Nothing here does I/O or reads a clock: times are passed in, as
milliseconds since the epoch (``time.time_ns() // 1_000_000``).

Out-of-range numbers print as virsh prints them: ``unknown`` for most fields, ``unsupported
value`` for agent-lifecycle, metadata-change and memory-failure fields.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Literal

from pyvirtrpc import events as ev
from pyvirtrpc.events import DomainEventID
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import TypedParamType
from pyvirtrpc.typedparams import decode_params

# ------------------------------------------------------------------------ event names

DOMAIN_EVENT_NAMES: dict[DomainEventID, str] = {
    DomainEventID.LIFECYCLE: "lifecycle",
    DomainEventID.REBOOT: "reboot",
    DomainEventID.RTC_CHANGE: "rtc-change",
    DomainEventID.WATCHDOG: "watchdog",
    DomainEventID.IO_ERROR: "io-error",
    DomainEventID.GRAPHICS: "graphics",
    DomainEventID.IO_ERROR_REASON: "io-error-reason",
    DomainEventID.CONTROL_ERROR: "control-error",
    DomainEventID.BLOCK_JOB: "block-job",
    DomainEventID.DISK_CHANGE: "disk-change",
    DomainEventID.TRAY_CHANGE: "tray-change",
    DomainEventID.PMWAKEUP: "pm-wakeup",
    DomainEventID.PMSUSPEND: "pm-suspend",
    DomainEventID.BALLOON_CHANGE: "balloon-change",
    DomainEventID.PMSUSPEND_DISK: "pm-suspend-disk",
    DomainEventID.DEVICE_REMOVED: "device-removed",
    DomainEventID.BLOCK_JOB_2: "block-job-2",
    DomainEventID.TUNABLE: "tunable",
    DomainEventID.AGENT_LIFECYCLE: "agent-lifecycle",
    DomainEventID.DEVICE_ADDED: "device-added",
    DomainEventID.MIGRATION_ITERATION: "migration-iteration",
    DomainEventID.JOB_COMPLETED: "job-completed",
    DomainEventID.DEVICE_REMOVAL_FAILED: "device-removal-failed",
    DomainEventID.METADATA_CHANGE: "metadata-change",
    DomainEventID.BLOCK_THRESHOLD: "block-threshold",
    DomainEventID.MEMORY_FAILURE: "memory-failure",
    DomainEventID.MEMORY_DEVICE_SIZE_CHANGE: "memory-device-size-change",
}
"""virsh's name of each domain event, in ID order (the order of ``virsh event --list``)."""

EVENT_NAME_ALIASES: dict[str, DomainEventID] = {"write-threshold": DomainEventID.BLOCK_THRESHOLD}
"""Names we accept besides virsh's (virsh itself knows only ``block-threshold``)."""

DOMAIN_EVENT_IDS: dict[str, DomainEventID] = {
    **{name: event_id for event_id, name in DOMAIN_EVENT_NAMES.items()},
    **EVENT_NAME_ALIASES,
}


def domain_event_id(name: str) -> DomainEventID:
    """The event ID for a name of ``--event NAME``; ValueError with virsh's text if unknown."""
    try:
        return DOMAIN_EVENT_IDS[name]
    except KeyError:
        raise ValueError(f"unknown event type {name}") from None


_OTHER_EVENT_NAMES: dict[type[ev.Event], str] = {
    ev.NetworkLifecycleEvent: "lifecycle",
    ev.StoragePoolLifecycleEvent: "lifecycle",
    ev.StoragePoolRefreshEvent: "refresh",
    ev.NodeDeviceLifecycleEvent: "lifecycle",
    ev.NodeDeviceUpdateEvent: "update",
    ev.SecretLifecycleEvent: "lifecycle",
    ev.SecretValueChangedEvent: "value-changed",
    ev.ConnectionClosedEvent: "connection-closed",
}


def event_name(event: ev.Event) -> str:
    """virsh's name of the event's type (``connection-closed`` is ours: virsh has none)."""
    if isinstance(event, ev.DomainEvent):
        return DOMAIN_EVENT_NAMES[event.event_id]
    return _OTHER_EVENT_NAMES[type(event)]


# ----------------------------------------------------------- numbers virsh spells out

UNKNOWN = "unknown"
UNSUPPORTED = "unsupported value"


def _pick(table: Sequence[str], value: int, missing: str = UNKNOWN) -> str:
    return table[value] if 0 <= value < len(table) else missing


_LIFECYCLE = (
    "Defined", "Undefined", "Started", "Suspended", "Resumed",
    "Stopped", "Shutdown", "PMSuspended", "Crashed",
)  # fmt: skip
_LIFECYCLE_DETAILS: tuple[tuple[str, ...], ...] = (
    ("Added", "Updated", "Renamed", "Snapshot"),
    ("Removed", "Renamed"),
    ("Booted", "Migrated", "Restored", "Snapshot", "Event wakeup"),
    (
        "Paused", "Migrated", "I/O Error", "Watchdog", "Restored",
        "Snapshot", "API error", "Post-copy", "Post-copy Error",
    ),
    ("Unpaused", "Migrated", "Snapshot", "Post-copy", "Post-copy Error"),
    ("Shutdown", "Destroyed", "Crashed", "Migrated", "Saved", "Failed", "Snapshot"),
    ("Finished", "Finished after guest request", "Finished after host request"),
    ("Memory", "Disk"),
    ("Panicked", "Crashloaded"),
)  # fmt: skip
_WATCHDOG_ACTIONS = ("none", "pause", "reset", "poweroff", "shutdown", "debug", "inject-nmi")
_IO_ERROR_ACTIONS = ("none", "pause", "report")
_GRAPHICS_PHASES = ("connect", "initialize", "disconnect")
_ADDRESS_FAMILIES = ("IPv4", "IPv6", "unix")
_BLOCK_JOB_TYPES = (
    "Unknown job", "Block Pull", "Block Copy", "Block Commit", "Active Block Commit", "Backup",
)  # fmt: skip
_BLOCK_JOB_STATUSES = ("completed", "failed", "canceled", "ready")
_DISK_CHANGE_REASONS = ("changed", "dropped")
_TRAY_CHANGE_REASONS = ("opened", "closed")
_AGENT_STATES = ("unknown", "connected", "disconnected")
_AGENT_REASONS = ("unknown", "domain started", "channel event")
_METADATA_TYPES = ("description", "title", "element")
_MEMORY_FAILURE_RECIPIENTS = ("hypervisor", "guest")
_MEMORY_FAILURE_ACTIONS = ("ignore", "inject", "fatal", "reset")
_MEMORY_FAILURE_ACTION_REQUIRED = 1 << 0
_MEMORY_FAILURE_RECURSIVE = 1 << 1
_NETWORK_LIFECYCLE = ("Defined", "Undefined", "Started", "Stopped")
_POOL_LIFECYCLE = ("Defined", "Undefined", "Started", "Stopped", "Created", "Deleted")
_NODE_DEVICE_LIFECYCLE = ("Created", "Deleted", "Defined", "Undefined")
_SECRET_LIFECYCLE = ("Defined", "Undefined")
_CLOSE_REASONS = ("error", "eof", "keepalive", "client")  # VIR_CONNECT_CLOSE_REASON_*
_DISCONNECT_CAUSES = ("I/O error", "end of file", "keepalive timeout")

# Per event class: the fields that hold one of the numbers above, and how each is spelled.
# The text form and the JSON form (``<field>_text``) both use these.
_Speller = Callable[[Any], str]
_SPELLERS: dict[type[ev.Event], dict[str, _Speller]] = {
    ev.LifecycleEvent: {
        "event": lambda e: _pick(_LIFECYCLE, e.event),
        "detail": lambda e: _pick(
            _LIFECYCLE_DETAILS[e.event] if 0 <= e.event < len(_LIFECYCLE_DETAILS) else (),
            e.detail,
        ),
    },
    ev.WatchdogEvent: {"action": lambda e: _pick(_WATCHDOG_ACTIONS, e.action)},
    ev.IoErrorEvent: {"action": lambda e: _pick(_IO_ERROR_ACTIONS, e.action)},
    ev.IoErrorReasonEvent: {"action": lambda e: _pick(_IO_ERROR_ACTIONS, e.action)},
    ev.GraphicsEvent: {"phase": lambda e: _pick(_GRAPHICS_PHASES, e.phase)},
    ev.BlockJobEvent: {
        "type": lambda e: _pick(_BLOCK_JOB_TYPES, e.type, "Unknown job"),
        "status": lambda e: _pick(_BLOCK_JOB_STATUSES, e.status),
    },
    ev.DiskChangeEvent: {"reason": lambda e: _pick(_DISK_CHANGE_REASONS, e.reason)},
    ev.TrayChangeEvent: {"reason": lambda e: _pick(_TRAY_CHANGE_REASONS, e.reason)},
    ev.AgentLifecycleEvent: {
        "state": lambda e: _pick(_AGENT_STATES, e.state, UNSUPPORTED),
        "reason": lambda e: _pick(_AGENT_REASONS, e.reason, UNSUPPORTED),
    },
    ev.MetadataChangeEvent: {"type": lambda e: _pick(_METADATA_TYPES, e.type, UNSUPPORTED)},
    ev.MemoryFailureEvent: {
        "recipient": lambda e: _pick(_MEMORY_FAILURE_RECIPIENTS, e.recipient, UNSUPPORTED),
        "action": lambda e: _pick(_MEMORY_FAILURE_ACTIONS, e.action, UNSUPPORTED),
    },
    ev.NetworkLifecycleEvent: {"event": lambda e: _pick(_NETWORK_LIFECYCLE, e.event)},
    ev.StoragePoolLifecycleEvent: {"event": lambda e: _pick(_POOL_LIFECYCLE, e.event)},
    ev.NodeDeviceLifecycleEvent: {"event": lambda e: _pick(_NODE_DEVICE_LIFECYCLE, e.event)},
    ev.SecretLifecycleEvent: {"event": lambda e: _pick(_SECRET_LIFECYCLE, e.event)},
    ev.ConnectionClosedEvent: {"reason": lambda e: _pick(_CLOSE_REASONS, e.reason)},
}
_SPELLERS[ev.BlockJob2Event] = _SPELLERS[ev.BlockJobEvent]


def _spell(event: ev.Event, field: str) -> str:
    return _SPELLERS[type(event)][field](event)


# --------------------------------------------------------------------- text form


def _null(text: str | None) -> str:
    return "<null>" if text is None else text


def _param_text(param: wire.TypedParam) -> str:
    value = param.value
    if value.type == TypedParamType.DOUBLE:
        return f"{value.value:g}"
    return str(value.value)  # booleans travel as ints and print as 0/1, as in virsh


def _params_text(params: list[wire.TypedParam]) -> str:
    return "".join(f"\t{p.field}: {_param_text(p)}\n" for p in params)


def _address_text(address: wire.DomainEventGraphicsAddress) -> str:
    return f"{_pick(_ADDRESS_FAMILIES, address.family)} {address.node} {address.service}"


def _domain_tail(e: ev.DomainEvent) -> str:
    """What virsh prints after ``event 'NAME' for domain 'DOMAIN'``."""
    match e:
        case ev.LifecycleEvent():
            return f": {_spell(e, 'event')} {_spell(e, 'detail')}\n"
        case ev.RtcChangeEvent():
            return f": {e.offset}\n"
        case ev.WatchdogEvent():
            return f": {_spell(e, 'action')}\n"
        case ev.IoErrorEvent():
            return f": {e.src_path} ({e.dev_alias}) {_spell(e, 'action')}\n"
        case ev.GraphicsEvent():
            identities = "".join(f"\t{i.type}={i.name}\n" for i in e.subject)
            return (
                f": {_spell(e, 'phase')} local[{_address_text(e.local)}]"
                f" remote[{_address_text(e.remote)}] {e.auth_scheme}\n{identities}"
            )
        case ev.IoErrorReasonEvent():
            return f": {e.src_path} ({e.dev_alias}) {_spell(e, 'action')} due to {e.reason}\n"
        case ev.BlockJobEvent() | ev.BlockJob2Event():
            disk = e.path if isinstance(e, ev.BlockJobEvent) else e.dst
            return f": {_spell(e, 'type')} for {disk} {_spell(e, 'status')}\n"
        case ev.DiskChangeEvent():
            return (
                f" disk {e.dev_alias}: {_null(e.old_src_path)} -> {_null(e.new_src_path)}:"
                f" {_spell(e, 'reason')}\n"
            )
        case ev.TrayChangeEvent():
            return f" disk {e.dev_alias}: {_spell(e, 'reason')}\n"
        case ev.BalloonChangeEvent():
            return f": {e.actual}KiB\n"
        case ev.DeviceRemovedEvent() | ev.DeviceAddedEvent() | ev.DeviceRemovalFailedEvent():
            return f": {e.dev_alias}\n"
        case ev.TunableEvent() | ev.JobCompletedEvent():
            return f":\n{_params_text(e.params)}"
        case ev.AgentLifecycleEvent():
            return f": state: '{_spell(e, 'state')}' reason: '{_spell(e, 'reason')}'\n"
        case ev.MigrationIterationEvent():
            return f": iteration: '{e.iteration}'\n"
        case ev.MetadataChangeEvent():
            return f": type {_spell(e, 'type')}, uri {_null(e.nsuri)}\n"
        case ev.BlockThresholdEvent():
            return f": dev: {e.dev}({_null(e.path)}) {e.threshold} {e.excess}\n"
        case ev.MemoryFailureEvent():
            required = int(bool(e.flags & _MEMORY_FAILURE_ACTION_REQUIRED))
            recursive = int(bool(e.flags & _MEMORY_FAILURE_RECURSIVE))
            return (
                f":\nrecipient: {_spell(e, 'recipient')}\naction: {_spell(e, 'action')}\n"
                f"flags:\n\taction required: {required}\n\trecursive: {recursive}\n"
            )
        case ev.MemoryDeviceSizeChangeEvent():
            return f":\nalias: {e.alias}\nsize: {e.size}\n"
        case _:  # reboot, control-error and the three power-management events
            return "\n"


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def _other_text(e: ev.Event) -> str:
    name = event_name(e)
    match e:
        case ev.NetworkLifecycleEvent():
            return f"event '{name}' for network {e.network.name}: {_spell(e, 'event')}\n"
        case ev.StoragePoolLifecycleEvent():
            return f"event '{name}' for storage pool {e.pool.name}: {_spell(e, 'event')}\n"
        case ev.StoragePoolRefreshEvent():
            return f"event '{name}' for storage pool {e.pool.name}\n"
        case ev.NodeDeviceLifecycleEvent():
            return f"event '{name}' for node device {e.dev.name}: {_spell(e, 'event')}\n"
        case ev.NodeDeviceUpdateEvent():
            return f"event '{name}' for node device {e.dev.name}\n"
        case ev.SecretLifecycleEvent():
            return f"event '{name}' for secret {_uuid(e.secret.uuid)}: {_spell(e, 'event')}\n"
        case ev.SecretValueChangedEvent():
            return f"event '{name}' for secret {_uuid(e.secret.uuid)}\n"
    raise TypeError(f"virsh prints no event line for {type(e).__name__}; see format_disconnect()")


def format_timestamp(millis: int) -> str:
    """virsh's ``--timestamp`` time, in UTC: ``2024-05-01 12:00:00.123+0000``."""
    when = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S}.{millis % 1000:03d}+0000"


def format_event(event: ev.Event, millis: int | None = None) -> str:
    """The text virsh prints for ``event``, ``TIMESTAMP: ``-prefixed when ``millis`` is given.

    ConnectionClosedEvent has no such text (virsh reports it as an error; see
    ``format_disconnect``): TypeError.
    """
    if isinstance(event, ev.DomainEvent):
        text = f"event '{event_name(event)}' for domain '{event.domain.name}'"
        text += _domain_tail(event)
    else:
        text = _other_text(event)
    return text if millis is None else f"{format_timestamp(millis)}: {text}"


EndReason = Literal["done", "timeout", "interrupt"]
_ENDINGS = {
    "done": "",
    "timeout": "event loop timed out\n",
    "interrupt": "event loop interrupted\n",
}


def format_summary(count: int, end: EndReason) -> str:
    """What ``virsh event`` prints when it stops listening, after ``count`` events.

    ``done``: the one event of a run without ``--loop`` arrived, or the connection closed;
    ``timeout``: ``--timeout`` expired; ``interrupt``: Ctrl-C. virsh exits with status 0 only
    if ``count`` is not zero. (virsh then prints an empty line, as after any command unless
    given ``-q``; that line is not part of this text.)
    """
    return f"{_ENDINGS[end]}events received: {count}\n"


def format_disconnect(reason: int, uri: str) -> str | None:
    """virsh's error line (for stderr) when the connection to ``uri`` closes.

    ``reason`` is a VIR_CONNECT_CLOSE_REASON_* number (ConnectionClosedEvent.reason, or 1,
    end of file, when the socket closes). None for 3 (the client closed it): virsh is
    silent then. virsh ends its event loop as for ``done`` and, whatever the count, exits
    with status 1.
    """
    if reason == 3:
        return None
    if 0 <= reason < len(_DISCONNECT_CAUSES):
        return f"error: Disconnected from {uri} due to {_DISCONNECT_CAUSES[reason]}\n"
    return "error: unknown reason\n"


# --------------------------------------------------------------------- JSON form


def _subject(value: Any) -> tuple[str, dict[str, Any]] | None:
    """``(key, description)`` if ``value`` names what the event is about."""
    if isinstance(value, wire.NonnullDomain):
        return "domain", {"name": value.name, "uuid": _uuid(value.uuid), "id": value.id}
    if isinstance(value, wire.NonnullNetwork):
        return "network", {"name": value.name, "uuid": _uuid(value.uuid)}
    if isinstance(value, wire.NonnullStoragePool):
        return "pool", {"name": value.name, "uuid": _uuid(value.uuid)}
    if isinstance(value, wire.NonnullNodeDevice):
        return "node_device", {"name": value.name}
    if isinstance(value, wire.NonnullSecret):
        secret = {"uuid": _uuid(value.uuid), "usage_type": value.usageType}
        return "secret", {**secret, "usage_id": value.usageID}
    return None


def _plain(value: Any) -> Any:
    """A field's value as JSON-ready data."""
    if isinstance(value, wire.DomainEventGraphicsAddress):
        return {
            "family": value.family,
            "family_text": _pick(_ADDRESS_FAMILIES, value.family),
            "node": value.node,
            "service": value.service,
        }
    if isinstance(value, wire.DomainEventGraphicsIdentity):
        return {"type": value.type, "name": value.name}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def event_json(event: ev.Event, millis: int | None = None) -> dict[str, Any]:
    """One event as a JSON-ready dict, for ``--json`` (one object per line).

    ``{"timestamp": "2024-05-01T12:00:00.123Z", "event": NAME, "domain": {"name", "uuid",
    "id"}, "fields": {...}}``: ``timestamp`` only when ``millis`` is given; the subject key is
    ``domain``, ``network``, ``pool``, ``node_device`` or ``secret`` (none for
    connection-closed); ``fields`` holds every other field of the event by its Python name,
    typed parameters as a dict, and for fields holding a number virsh spells out, that
    spelling too, as ``<field>_text``.
    """
    out: dict[str, Any] = {}
    if millis is not None:
        when = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC)
        out["timestamp"] = f"{when:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"
    out["event"] = event_name(event)
    spellers = _SPELLERS.get(type(event), {})
    data: dict[str, Any] = {}
    for f in fields(event):
        value = getattr(event, f.name)
        subject = _subject(value)
        if subject is not None:
            out[subject[0]] = subject[1]
            continue
        if isinstance(event, ev.TunableEvent | ev.JobCompletedEvent) and f.name == "params":
            data[f.name] = decode_params(value)
        else:
            data[f.name] = _plain(value)
        if f.name in spellers:
            data[f"{f.name}_text"] = spellers[f.name](event)
    out["fields"] = data
    return out
