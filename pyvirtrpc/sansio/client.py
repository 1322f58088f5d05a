"""The client side of a libvirt RPC connection, sans-IO.

``ClientSession`` numbers calls (serials from 0, as libvirt's client does), keeps at most
``max_in_flight`` of them on the wire and queues the rest, matches replies to calls by
(program, serial), answers the peer's keepalive PINGs, sends its own when asked to, and
hands event MESSAGEs and stream packets to the caller. It never does I/O and never reads
a clock: feed it bytes with :meth:`ClientSession.receive_data`, send what
:meth:`ClientSession.data_to_send` returns.

Each call carries an opaque ``token`` chosen by the caller (the I/O layer uses the
waiting task); replies come back as :class:`Reply` or :class:`ErrorReply` carrying it.
A call given up by its caller (:meth:`ClientSession.abandon`) keeps its slot until its
late reply arrives, because the server still counts it, and that reply is then dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from pyvirtrpc.errors import ConnectionClosed, Error, ProtocolError, RemoteError
from pyvirtrpc.gen.keepalive import KEEPALIVE_PROGRAM
from pyvirtrpc.gen.virnet import MessageError, MessageStatus, MessageType
from pyvirtrpc.sansio.framing import FrameDecoder, Packet, encode_packet
from pyvirtrpc.sansio.keepalive import (
    PING_PACKET,
    PONG_PACKET,
    Keepalive,
    KeepaliveAction,
    is_ping,
)
from pyvirtrpc.xdr import XdrError

T = TypeVar("T")

DEFAULT_MAX_IN_FLIGHT = 5  # the daemon's default max_client_requests
_SERIAL_MASK = 0xFFFFFFFF
_ABANDONED = object()


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """A successful reply; ``payload`` is the XDR-encoded ``ret``."""

    token: T
    payload: bytes


@dataclass(frozen=True, slots=True)
class ErrorReply(Generic[T]):
    """A call failed: a RemoteError from the peer, or a ProtocolError about its reply."""

    token: T
    error: Error


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """A MESSAGE packet the server sent on its own (an event), keepalive excluded."""

    prog: int
    proc: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """A STREAM or STREAM_HOLE packet of a stream opened with ``open_stream``."""

    packet: Packet


ClientEvent = Reply[T] | ErrorReply[T] | ServerMessage | StreamPacket


class ClientSession(Generic[T]):
    """State of one client connection; see the module docstring."""

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.keepalive: Keepalive | None = None
        self._decoder = FrameDecoder()
        self._next_serial = 0
        self._in_flight: dict[tuple[int, int], object] = {}  # token, or _ABANDONED
        self._queued: deque[tuple[int, int, T, bytes]] = deque()
        self._queued_keys: set[tuple[int, int]] = set()
        self._streams: set[int] = set()
        self._outbox: list[bytes] = []
        self._closed: ConnectionClosed | None = None

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def in_flight(self) -> int:
        """Calls on the wire, abandoned ones included (the server still counts them)."""
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """Calls waiting for a free slot."""
        return len(self._queued)

    # ------------------------------------------------------------------ calls

    def call(self, prog: int, vers: int, proc: int, payload: bytes, token: T) -> int:
        """Start a call; returns its serial. It is sent now, or queued until a slot frees."""
        if self._closed is not None:
            raise self._closed
        serial = self._next_serial
        self._next_serial = (serial + 1) & _SERIAL_MASK
        data = encode_packet(prog, vers, proc, MessageType.CALL, serial, MessageStatus.OK, payload)
        if len(self._in_flight) < self.max_in_flight and not self._queued:
            self._in_flight[prog, serial] = token
            self._outbox.append(data)
        else:
            self._queued.append((prog, serial, token, data))
            self._queued_keys.add((prog, serial))
        return serial

    def abandon(self, prog: int, serial: int) -> None:
        """The caller gave up on a call: unqueue it, or drop its reply when it comes."""
        key = (prog, serial)
        if key in self._queued_keys:
            self._queued_keys.discard(key)
            self._queued = deque(q for q in self._queued if (q[0], q[1]) != key)
        elif key in self._in_flight:
            self._in_flight[key] = _ABANDONED

    def open_stream(self, serial: int) -> None:
        """Deliver STREAM packets with ``serial`` as StreamPacket events."""
        self._streams.add(serial)

    def close_stream(self, serial: int) -> None:
        self._streams.discard(serial)

    # -------------------------------------------------------------- keepalive

    def start_keepalive(self, interval: float, count: int, now: float) -> None:
        """Send our own PINGs after ``interval`` s of silence; dead after ``count`` more."""
        self.keepalive = Keepalive(interval, count, now)

    def poll_keepalive(self, now: float) -> bool:
        """Run the keepalive timer (at or after ``keepalive.deadline``); True: peer is dead."""
        if self.keepalive is None:
            return False
        action = self.keepalive.poll(now)
        if action is KeepaliveAction.PING:
            self._outbox.append(PING_PACKET)
        return action is KeepaliveAction.DEAD

    # ------------------------------------------------------------------ bytes

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call, in order."""
        if not self._outbox:
            return b""
        data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def receive_data(self, data: bytes, now: float = 0.0) -> list[ClientEvent[T]]:
        """Feed bytes from the peer; returns what they mean, in order.

        Raises ProtocolError (FramingError included) when the peer broke the protocol in
        a way that ends the connection: bad framing, a reply nobody waits for, a CALL.
        """
        if self._closed is not None:
            return []
        if self.keepalive is not None and data:
            self.keepalive.received(now)
        events: list[ClientEvent[T]] = []
        for packet in self._decoder.feed(data):
            event = self._dispatch(packet)
            if event is not None:
                events.append(event)
        return events

    def _dispatch(self, packet: Packet) -> ClientEvent[T] | None:
        kind = packet.type
        if kind == MessageType.REPLY or kind == MessageType.REPLY_WITH_FDS:
            return self._reply(packet)
        if kind == MessageType.MESSAGE:
            if is_ping(packet):
                self._outbox.append(PONG_PACKET)
                return None
            if packet.prog == KEEPALIVE_PROGRAM:
                return None  # a PONG: receive_data already counted it as a sign of life
            return ServerMessage(packet.prog, packet.proc, packet.payload)
        if kind == MessageType.STREAM or kind == MessageType.STREAM_HOLE:
            if packet.serial in self._streams:
                return StreamPacket(packet)
            return None  # libvirt's client ignores packets of streams it does not know
        raise ProtocolError(
            f"unexpected {kind.name} packet from the server "
            f"(prog {packet.prog:#x}, proc {packet.proc}, serial {packet.serial})"
        )

    def _reply(self, packet: Packet) -> ClientEvent[T] | None:
        key = (packet.prog, packet.serial)
        token = self._in_flight.pop(key, None)
        if token is None:
            raise ProtocolError(
                f"reply for no call: prog {packet.prog:#x}, serial {packet.serial}, "
                f"proc {packet.proc}"
            )
        self._release_slot()
        if token is _ABANDONED:
            return None
        owner: T = token  # type: ignore[assignment]
        if packet.type == MessageType.REPLY_WITH_FDS:
            return ErrorReply(owner, ProtocolError("file descriptors in a reply are unsupported"))
        if packet.status == MessageStatus.OK:
            return Reply(owner, packet.payload)
        if packet.status == MessageStatus.ERROR:
            try:
                return ErrorReply(owner, RemoteError.from_wire(MessageError.decode(packet.payload)))
            except XdrError as exc:
                return ErrorReply(owner, exc)
        return ErrorReply(owner, ProtocolError(f"reply with status {packet.status.name}"))

    def _release_slot(self) -> None:
        if self._queued:
            prog, serial, token, data = self._queued.popleft()
            self._queued_keys.discard((prog, serial))
            self._in_flight[prog, serial] = token
            self._outbox.append(data)

    # ------------------------------------------------------------------ close

    def close(self, reason: ConnectionClosed) -> list[T]:
        """The connection is gone: returns the tokens of every call still waiting.

        Later calls raise ``reason``; bytes received afterwards are ignored.
        """
        if self._closed is not None:
            return []
        self._closed = reason
        waiting: list[T] = [t for t in self._in_flight.values() if t is not _ABANDONED]  # type: ignore[misc]
        waiting.extend(q[2] for q in self._queued)
        self._in_flight.clear()
        self._queued.clear()
        self._queued_keys.clear()
        self._outbox.clear()
        return waiting

