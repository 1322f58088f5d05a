"""The server side of a libvirt RPC connection, sans-IO: one client, as libvirtd sees it.

``ServerSession`` turns the bytes a client sends into :class:`Call` objects for the I/O
layer to answer, and answers by itself everything libvirtd's daemon code answers without
a hypervisor driver, with libvirtd's exact errors:

- framing (a bad length word raises FramingError: drop the connection, as libvirtd does);
- keepalive: PINGs answered with PONG at any time; the server's own timer starts when the
  client asks for feature 10 (``CONNECT_SUPPORTS_FEATURE``), answered even before open;
- only CALL / CALL_WITH_FDS start requests, with status OK ("Unexpected message status
  N" otherwise); STREAM, REPLY, MESSAGE and unknown types are dropped silently; unknown
  programs ("Cannot find program N version V") and procedures ("unknown procedure: N");
  arguments that do not decode ("Unable to decode message payload");
- AUTH_LIST ([none]), CONNECT_OPEN bookkeeping (a second open fails *and* closes the
  first, as in libvirtd 9.0), CONNECT_CLOSE (reply, then close), calls before open
  ("hypervisor connection not open"), feature answers (8, 14 and 15 hard-coded), close
  callbacks (360/361), read-only connections (``@writes`` procedures refused with
  "operation forbidden: read only access prevents virX");
- the event relay: registrations by 105/106, 167/168, 316/317 and the network, storage
  pool, node device and secret equivalents, with libvirtd's rules and texts;
  :meth:`ServerSession.send_event` turns a backend event into the MESSAGE of every
  matching registration (legacy or callback form, serial 1);
- at most ``max_requests`` requests in flight: :attr:`ServerSession.wants_read` turns
  false and the I/O layer stops reading, as libvirtd stops polling the socket. A slot is
  held until its reply leaves through :meth:`ServerSession.data_to_send`.

Outgoing events are bounded: :meth:`ServerSession.send_event` raises :class:`Overflow`
when more than ``max_queued_events`` event packets wait to be sent (see
pyvirtrpc.server for what the I/O layer does then).

Forwarding (a relay): with :attr:`ServerSession.forwarding` set, once the connection is
open every call except the session's own (AUTH_LIST, CONNECT_OPEN, CONNECT_CLOSE,
CONNECT_SUPPORTS_FEATURE, the close callbacks) and every STREAM/STREAM_HOLE packet comes
out undecoded, as a :class:`Forward`, whatever its procedure; the backend answers with
whole packets (:meth:`ServerSession.send_packet`) and enforces read-only access itself.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyvirtrpc.errors import (
    ErrorDomain,
    ErrorNumber,
    FramingError,
    ProtocolError,
    RemoteError,
)
from pyvirtrpc.events import (
    FAMILIES,
    LEGACY_EVENT_IDS,
    ConnectionClosedEvent,
    DomainEventID,
    Event,
    EventFamily,
    encode_event,
    family_of,
)
from pyvirtrpc.gen import remote
from pyvirtrpc.gen.keepalive import KEEPALIVE_PROGRAM, KEEPALIVE_PROTOCOL_VERSION
from pyvirtrpc.gen.keepalive import Procedure as KeepaliveProc
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.procedures import ProcedureInfo, ProcedureKind, lookup
from pyvirtrpc.sansio.framing import MIN_PACKET, PREFIX, FrameDecoder, Packet, encode_packet
from pyvirtrpc.sansio.keepalive import PING_PACKET, PONG_PACKET, Keepalive, KeepaliveAction
from pyvirtrpc.xdr import XdrStruct

__all__ = [
    "DEFAULT_KEEPALIVE_COUNT",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_MAX_QUEUED_EVENTS",
    "DEFAULT_MAX_REQUESTS",
    "Call",
    "CloseBackend",
    "Forward",
    "Overflow",
    "ServerSession",
    "api_error_domain",
]

DEFAULT_MAX_REQUESTS = 5  # libvirtd's max_client_requests
DEFAULT_KEEPALIVE_INTERVAL = 5.0  # libvirtd's keepalive_interval
DEFAULT_KEEPALIVE_COUNT = 5  # libvirtd's keepalive_count
DEFAULT_MAX_QUEUED_EVENTS = 1024

_NFDS = struct.Struct(">I")
_DECODE_FAILURES = (struct.error, ValueError, TypeError, IndexError, OverflowError)
_CALL_TYPES = (MessageType.CALL, MessageType.CALL_WITH_FDS)
_REMOTE = remote.REMOTE_PROGRAM
_FEATURE_FD_PASSING = 8
_FEATURE_KEEPALIVE = 10
_FEATURE_EVENT_CALLBACK = 14
_FEATURE_CLOSE_CALLBACK = 15
_ALWAYS_SUPPORTED = frozenset(
    {_FEATURE_FD_PASSING, _FEATURE_EVENT_CALLBACK, _FEATURE_CLOSE_CALLBACK}
)


class Overflow(ProtocolError):
    """The client does not read: its queue of outgoing events is full."""


@dataclass(frozen=True, slots=True)
class Call:
    """A request for the I/O layer: answer it with ``reply`` or ``fail``.

    ``readonly`` is set on a CONNECT_OPEN call: the connection is read-only because it
    came in on the read-only socket or asked for VIR_CONNECT_RO.
    """

    info: ProcedureInfo
    serial: int
    args: Any
    readonly: bool = False

    @property
    def program(self) -> int:
        return self.info.program

    @property
    def procedure(self) -> int:
        return int(self.info.number)


@dataclass(frozen=True, slots=True)
class Forward:
    """A packet for a forwarding backend, undecoded (see :attr:`ServerSession.forwarding`).

    A call (type CALL or CALL_WITH_FDS) holds its request slot until its REPLY leaves
    (:meth:`ServerSession.send_packet`); a STREAM or STREAM_HOLE packet holds none.
    ``info`` is the procedure's table row, or None for a procedure pyvirtrpc does not know.
    """

    prog: int
    vers: int
    proc: int
    type: int
    serial: int
    status: int
    payload: bytes
    info: ProcedureInfo | None


@dataclass(frozen=True, slots=True)
class CloseBackend:
    """libvirtd's rules dropped the client's hypervisor connection (a second CONNECT_OPEN
    does that in libvirtd 9.0): close the backend connection."""


_REGISTER = {info.register: family for family, info in FAMILIES.items()}
_DEREGISTER = {info.deregister: family for family, info in FAMILIES.items()}
# libvirtd 9.0 says "node device" when a secret callback is not registered (its typo).
_DEREGISTER_NAME = {**{f: f.value for f in EventFamily}, EventFamily.SECRET: "node device"}
_LEGACY_REGISTRATIONS = frozenset(
    {
        P.CONNECT_DOMAIN_EVENT_REGISTER,
        P.CONNECT_DOMAIN_EVENT_DEREGISTER,
        P.CONNECT_DOMAIN_EVENT_REGISTER_ANY,
        P.CONNECT_DOMAIN_EVENT_DEREGISTER_ANY,
    }
)
# Session-level procedures that libvirtd answers before any connection is open.
_BEFORE_OPEN = frozenset({P.AUTH_LIST, P.CONNECT_OPEN, P.CONNECT_CLOSE})
# What the session answers itself (or hands on decoded) even when it forwards the rest.
_NOT_FORWARDED = frozenset(
    (_REMOTE, int(proc)) for proc in (
        *_BEFORE_OPEN, P.CONNECT_SUPPORTS_FEATURE,
        P.CONNECT_REGISTER_CLOSE_CALLBACK, P.CONNECT_UNREGISTER_CLOSE_CALLBACK,
    )
)
_STREAM_TYPES = (MessageType.STREAM, MessageType.STREAM_HOLE)


@dataclass(slots=True)
class _Registration:
    family: EventFamily
    event_id: int
    key: str | None  # the object filter, or None for all objects
    callback_id: int
    legacy: bool = False


_API_DOMAINS = (
    (re.compile(r"vir(Connect)?DomainQemu"), ErrorDomain.NONE),
    (re.compile(r"virDomain(Snapshot|ListAllSnapshots|HasCurrentSnapshot|RevertToSnapshot)"),
     ErrorDomain.DOMAIN_SNAPSHOT),
    (re.compile(r"virDomain(Checkpoint|ListAllCheckpoints)"), ErrorDomain.DOMAIN_CHECKPOINT),
    (re.compile(r"vir(Connect\w*Network|Network)"), ErrorDomain.NETWORK),
    (re.compile(r"vir(Connect\w*StoragePool|Storage|ConnectGetStoragePool)"),
     ErrorDomain.STORAGE),
    (re.compile(r"vir(Connect\w*NodeDevice|NodeDevice|NodeNumOfDevices|NodeListDevices)"),
     ErrorDomain.NODEDEV),
    (re.compile(r"vir(Connect\w*Secret|Secret)"), ErrorDomain.SECRET),
    (re.compile(r"vir(Connect\w*Interface|Interface)"), ErrorDomain.INTERFACE),
    (re.compile(r"vir(Connect\w*NWFilter|NWFilter)"), ErrorDomain.NWFILTER),
    (re.compile(r"virStream"), ErrorDomain.STREAMS),
    (re.compile(r"virConnect(Open|Close)"), ErrorDomain.NONE),
)


def api_error_domain(api: str) -> ErrorDomain:
    """The error domain of libvirt's public API ``api`` (the one its source file uses).

    This is the domain of the errors the API itself raises before reaching a driver:
    "read only access prevents virX" and "not supported by the connection driver: virX".
    """
    for pattern, domain in _API_DOMAINS:
        if pattern.match(api):
            return domain
    return ErrorDomain.DOMAIN  # libvirt-domain.c and libvirt-host.c


def _rpc_error(detail: str) -> RemoteError:
    return RemoteError.report(ErrorNumber.RPC, ErrorDomain.RPC, detail)


def _internal_error(detail: str) -> RemoteError:
    return RemoteError.report(ErrorNumber.INTERNAL_ERROR, ErrorDomain.RPC, detail)


def _signed(value: int) -> int:
    """An unsigned header word as C's %d prints it."""
    return value - (1 << 32) if value & 0x80000000 else value


def no_support(info: ProcedureInfo) -> RemoteError:
    """What libvirt answers for a procedure the driver does not implement."""
    return RemoteError.report(ErrorNumber.NO_SUPPORT, api_error_domain(info.api), info.api)


def read_only_denied(api: str) -> RemoteError:
    """What libvirt answers when ``api`` is called on a read-only connection."""
    return RemoteError.report(
        ErrorNumber.OPERATION_DENIED, api_error_domain(api), f"read only access prevents {api}"
    )


@dataclass(slots=True)
class _Outbox:
    packets: list[bytes] = field(default_factory=list)
    replies: int = 0  # replies among them: request slots released when they leave
    events: int = 0


class ServerSession:
    """State of one client connection, as libvirtd keeps it; see the module docstring.

    ``programs`` are the program numbers (version 1) the server dispatches;
    ``next_callback_id`` hands out event callback IDs (shared by all clients of a server,
    as a libvirt driver shares them between its connections); ``event_families`` are the
    kinds of events the backend can emit (registrations for others are refused as
    libvirt refuses them for a driver without them).
    """

    def __init__(
        self,
        *,
        readonly: bool = False,
        programs: frozenset[int] = frozenset({_REMOTE}),
        next_callback_id: Callable[[], int],
        event_families: frozenset[EventFamily] = frozenset(EventFamily),
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_count: int = DEFAULT_KEEPALIVE_COUNT,
    ) -> None:
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.socket_readonly = readonly
        self.readonly = readonly
        self.programs = programs
        self.event_families = event_families
        self.max_requests = max_requests
        self.max_queued_events = max_queued_events
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.keepalive: Keepalive | None = None
        self.is_open = False
        self.closing = False  # CONNECT_CLOSE answered: close once the reply is sent
        self.close_callback = False
        self.forwarding = False  # hand calls on undecoded once open (see Forward)
        self._opening = False
        self._drop_after_open = False
        self._now = 0.0
        self._next_callback_id = next_callback_id
        self._decoder = FrameDecoder()
        self._pending: deque[bytes] = deque()  # whole packets not taken yet
        self._in_flight = 0
        self._out = _Outbox()
        self._registrations: list[_Registration] = []

    # ------------------------------------------------------------------ flow control

    @property
    def in_flight(self) -> int:
        """Requests received whose reply has not left yet."""
        return self._in_flight

    @property
    def wants_read(self) -> bool:
        """False while ``max_requests`` requests are in flight (stop reading), or closing.

        Packets received meanwhile wait, unread, as they would in libvirtd's socket;
        :meth:`resume` takes them once replies have left.
        """
        return self._in_flight < self.max_requests and not self.closing and not self._pending

    def data_to_send(self) -> bytes:
        """Everything queued for the client; the replies in it release their slots."""
        out = self._out
        self._in_flight -= out.replies
        self._out = _Outbox()
        return b"".join(out.packets)

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out.packets)

    @property
    def queued_events(self) -> int:
        return self._out.events

    # ------------------------------------------------------------------ receiving

    def receive_data(
        self, data: bytes | bytearray, now: float
    ) -> list[Call | CloseBackend | Forward]:
        """Feed bytes from the client; returns what the I/O layer must do, in order:
        answer each :class:`Call` (``reply``/``fail``, or ``opened``/``open_failed``
        for CONNECT_OPEN), close the backend connection on :class:`CloseBackend`, hand
        each :class:`Forward` to a forwarding backend.

        Raises FramingError for an invalid length word, or a call passing file
        descriptors: close the connection (:meth:`resume` too).
        """
        self._pending.extend(self._decoder.feed_frames(data))
        return self.resume(now)

    def resume(self, now: float) -> list[Call | CloseBackend | Forward]:
        """Take the packets that waited for a free request slot (see :attr:`wants_read`)."""
        self._now = now
        todo: list[Call | CloseBackend | Forward] = []
        pending = self._pending
        while pending and self._in_flight < self.max_requests and not self.closing:
            if self.keepalive is not None:
                self.keepalive.received(now)
            item = self._packet(pending.popleft())
            if item is not None:
                todo.append(item)
        return todo

    def _packet(self, frame: bytes) -> Call | CloseBackend | Forward | None:
        _, prog, vers, proc, type_, serial, status = PREFIX.unpack_from(frame)
        if prog == KEEPALIVE_PROGRAM and vers == KEEPALIVE_PROTOCOL_VERSION and (
            type_ == MessageType.MESSAGE
        ):
            if proc == KeepaliveProc.PING:
                self._queue(PONG_PACKET)
            return None  # PONGs and unknown keepalive messages only show liveness
        if type_ not in _CALL_TYPES:
            if type_ in _STREAM_TYPES and self.forwarding and self.is_open:
                return Forward(prog, vers, proc, type_, serial, status, frame[MIN_PACKET:], None)
            return None  # STREAM (no stream is open), REPLY, MESSAGE, unknown: dropped
        self._in_flight += 1
        if vers != 1 or prog not in self.programs:
            self._error(
                prog, vers, proc, serial,
                _rpc_error(f"Cannot find program {_signed(prog)} version {_signed(vers)}"),
            )
            return None
        if status != MessageStatus.OK:
            self._error(prog, vers, proc, serial,
                        _rpc_error(f"Unexpected message status {status}"))
            return None
        if type_ == MessageType.CALL_WITH_FDS and _fd_count(frame):
            # Each fd follows the packet with a byte of its own: the stream cannot go on.
            raise FramingError(f"call {proc} (serial {serial}) passes file descriptors, "
                               "which this server does not receive")
        info = lookup(prog, proc)
        if self.forwarding and self.is_open and (prog, proc) not in _NOT_FORWARDED:
            return Forward(prog, vers, proc, type_, serial, status, frame[MIN_PACKET:], info)
        if info is None or info.kind == ProcedureKind.EVENT:
            self._error(prog, vers, proc, serial, _rpc_error(f"unknown procedure: {_signed(proc)}"))
            return None
        start = MIN_PACKET
        if type_ == MessageType.CALL_WITH_FDS:
            start += _NFDS.size  # the count of fds, 0 here
        try:
            args = None if info.args is None else info.args.unpack_from(frame, start)[0]
        except _DECODE_FAILURES:
            self._error(prog, vers, proc, serial, _rpc_error("Unable to decode message payload"))
            return None
        call = Call(info, serial, args)
        try:
            return self._dispatch(call)
        except RemoteError as exc:
            self.fail(call, exc)
            return CloseBackend() if exc is _SECOND_OPEN else None

    def _dispatch(self, call: Call) -> Call | None:
        """Answer what the daemon answers itself; return the calls for the backend."""
        proc = call.info.number
        if call.program == _REMOTE:
            if proc == P.AUTH_LIST:
                self.reply(call, remote.AuthListRet([remote.AuthType.NONE]))
                return None
            if proc == P.CONNECT_SUPPORTS_FEATURE and call.args.feature == _FEATURE_KEEPALIVE:
                if self.keepalive is None:
                    self.keepalive = Keepalive(
                        self.keepalive_interval, self.keepalive_count, self._now
                    )
                self.reply(call, remote.ConnectSupportsFeatureRet(1))
                return None
            if proc == P.CONNECT_OPEN:
                return self._open(call)
            if proc == P.CONNECT_CLOSE:
                self.closing = True
                self.reply(call, None)
                return None
        if not self.is_open:
            raise _internal_error("hypervisor connection not open")
        if call.program == _REMOTE:
            handled = self._connection_call(call)
            if handled:
                return None
        if call.info.writes and self.readonly:
            raise read_only_denied(call.info.api)
        return call

    def _open(self, call: Call) -> Call | None:
        if self._opening:  # the first open is still on its way: drop it when it lands
            self._drop_after_open = True
            raise _internal_error("connection already open")
        if self.is_open:  # libvirtd 9.0 drops its connection too: later calls are "not open"
            self._reset()
            raise _SECOND_OPEN
        if call.args.name is None:
            raise _internal_error("connection not open")
        self._opening = True
        return Call(call.info, call.serial, call.args,
                    readonly=self.socket_readonly or bool(call.args.flags & 1))

    def _reset(self) -> None:
        self.is_open = False
        self.readonly = self.socket_readonly
        self.close_callback = False
        self._registrations.clear()

    def opened(self, call: Call) -> CloseBackend | None:
        """The backend accepted CONNECT_OPEN: answer it.

        Returns CloseBackend when a second CONNECT_OPEN came meanwhile (libvirtd's rule).
        """
        self._opening = False
        self.reply(call, None)
        if self._drop_after_open:
            self._drop_after_open = False
            return CloseBackend()
        self.is_open = True
        self.readonly = call.readonly
        return None

    def open_failed(self, call: Call, error: RemoteError) -> None:
        self._opening = self._drop_after_open = False
        self.fail(call, error)

    # -------------------------------------------------------- connection-level procedures

    def _connection_call(self, call: Call) -> bool:
        """Answer the remote program's procedures that are about the connection itself."""
        proc = call.info.number
        args = call.args
        if proc == P.CONNECT_SUPPORTS_FEATURE:
            if args.feature not in _ALWAYS_SUPPORTED:
                return False  # the backend answers
            self.reply(call, remote.ConnectSupportsFeatureRet(1))
        elif proc == P.CONNECT_REGISTER_CLOSE_CALLBACK:
            self.close_callback = True
            self.reply(call, None)
        elif proc == P.CONNECT_UNREGISTER_CLOSE_CALLBACK:
            self.close_callback = False
            self.reply(call, None)
        elif proc in _LEGACY_REGISTRATIONS:
            self._legacy_registration(call)
        elif proc in _REGISTER:
            self._register(call, _REGISTER[P(proc)])
        elif proc in _DEREGISTER:
            self._deregister(call, _DEREGISTER[P(proc)])
        else:
            return False
        return True

    def _register(self, call: Call, family: EventFamily) -> None:
        info = FAMILIES[family]
        event_id = call.args.eventID
        if event_id not in info.ids._value2member_map_:
            prefix = "" if family is EventFamily.DOMAIN else f"{family.value} "
            raise _internal_error(f"unsupported {prefix}event ID {event_id}")
        if family not in self.event_families:
            raise no_support(call.info)
        callback_id = self._add(family, event_id, info.args_key(call.args), legacy=False)
        self.reply(call, info.register_ret(callback_id))

    def _add(self, family: EventFamily, event_id: int, key: str | None, legacy: bool) -> int:
        for reg in self._registrations:
            if (reg.family, reg.event_id, reg.key) == (family, event_id, key):
                raise RemoteError.report(
                    ErrorNumber.INVALID_ARG, ErrorDomain.NONE, "event callback already tracked"
                )
        callback_id = self._next_callback_id()
        self._registrations.append(_Registration(family, event_id, key, callback_id, legacy))
        return callback_id

    def _deregister(self, call: Call, family: EventFamily) -> None:
        callback_id = call.args.callbackID
        for i, reg in enumerate(self._registrations):
            if reg.family is family and reg.callback_id == callback_id:
                del self._registrations[i]
                self.reply(call, None)
                return
        name = _DEREGISTER_NAME[family]
        raise _internal_error(f"{name} event callback {callback_id} not registered")

    def _legacy_registration(self, call: Call) -> None:
        proc = call.info.number
        if proc in (P.CONNECT_DOMAIN_EVENT_REGISTER, P.CONNECT_DOMAIN_EVENT_DEREGISTER):
            event_id = DomainEventID.LIFECYCLE
        else:
            event_id = call.args.eventID
            if event_id not in LEGACY_EVENT_IDS:
                raise _internal_error(f"unsupported event ID {event_id}")
        if proc in (P.CONNECT_DOMAIN_EVENT_REGISTER, P.CONNECT_DOMAIN_EVENT_REGISTER_ANY):
            self._add(EventFamily.DOMAIN, event_id, None, legacy=True)
        else:  # libvirtd removes the first domain registration of that ID, of any style
            for i, reg in enumerate(self._registrations):
                if reg.family is EventFamily.DOMAIN and reg.event_id == event_id:
                    del self._registrations[i]
                    break
            else:
                raise _internal_error(f"domain event {event_id} not registered")
        if proc == P.CONNECT_DOMAIN_EVENT_REGISTER:
            self.reply(call, remote.ConnectDomainEventRegisterRet(0))
        elif proc == P.CONNECT_DOMAIN_EVENT_DEREGISTER:
            self.reply(call, remote.ConnectDomainEventDeregisterRet(0))
        else:
            self.reply(call, None)

    # ------------------------------------------------------------------ answering

    def reply(self, call: Call, ret: XdrStruct | None) -> None:
        """Answer ``call`` with its ``ret`` struct (None for void)."""
        self._queue(
            encode_packet(call.program, 1, call.procedure, MessageType.REPLY, call.serial,
                          MessageStatus.OK, b"" if ret is None else ret.encode()),
            reply=True,
        )

    def fail(self, call: Call, error: RemoteError) -> None:
        """Answer ``call`` with an error (always a REPLY, as libvirtd sends them)."""
        self._error(call.program, 1, call.procedure, call.serial, error)

    def _error(self, prog: int, vers: int, proc: int, serial: int, error: RemoteError) -> None:
        self._queue(
            encode_packet(prog, vers, proc, MessageType.REPLY, serial, MessageStatus.ERROR,
                          error.to_wire().encode()),
            reply=True,
        )

    def _queue(self, packet: bytes, reply: bool = False) -> None:
        out = self._out
        out.packets.append(packet)
        if reply:
            out.replies += 1

    # ------------------------------------------------------------------ events

    def send_event(self, event: Event) -> int:
        """Queue ``event`` for every registration that wants it; returns how many.

        Raises :class:`Overflow` when the client already has ``max_queued_events`` event
        packets waiting (it does not read).
        """
        if not self.is_open:
            return 0
        if isinstance(event, ConnectionClosedEvent):
            targets: list[int | None] = [0] if self.close_callback else []
        else:
            targets = self._targets(event)
        for callback_id in targets:
            proc, payload = encode_event(event, callback_id)
            self._queue_event(encode_packet(_REMOTE, 1, proc, MessageType.MESSAGE, 1,
                                            MessageStatus.OK, payload))
        return len(targets)

    def _queue_event(self, packet: bytes) -> None:
        if self._out.events >= self.max_queued_events:
            raise Overflow(f"{self._out.events} events wait for a client that does not read")
        self._queue(packet)
        self._out.events += 1

    def send_packet(self, packet: Packet) -> None:
        """Queue a packet a forwarding backend made: the REPLY to a :class:`Forward` call
        (its request slot is released once it leaves), or a MESSAGE or stream packet,
        bounded as events are (raises :class:`Overflow`)."""
        if packet.type == MessageType.REPLY:
            self._queue(packet.to_bytes(), reply=True)
        else:
            self._queue_event(packet.to_bytes())

    def _targets(self, event: Event) -> list[int | None]:
        info = family_of(event)
        if info is None:
            return []
        family = info.family
        event_id = int(type(event).event_id)  # type: ignore[attr-defined]
        key = info.event_key(event)
        return [
            None if reg.legacy else reg.callback_id
            for reg in self._registrations
            if reg.family is family and reg.event_id == event_id and reg.key in (None, key)
        ]

    @property
    def registrations(self) -> list[tuple[EventFamily, int, str | None, int]]:
        """(family, event ID, filter key, callback ID) of every registration, in order."""
        return [(r.family, r.event_id, r.key, r.callback_id) for r in self._registrations]

    # ------------------------------------------------------------------ keepalive

    def poll_keepalive(self, now: float) -> KeepaliveAction:
        """Call at ``keepalive.deadline``: queues a PING, or says the client is dead."""
        if self.keepalive is None:
            return KeepaliveAction.NOTHING
        action = self.keepalive.poll(now)
        if action is KeepaliveAction.PING:
            self._queue(PING_PACKET)
        return action


_SECOND_OPEN = _internal_error("connection already open")


def _fd_count(frame: bytes) -> int:
    try:
        (count,) = _NFDS.unpack_from(frame, MIN_PACKET)
    except struct.error:
        raise FramingError("a CALL_WITH_FDS packet without its fd count") from None
    return int(count)
