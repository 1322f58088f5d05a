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
from typing import Generic, NamedTuple, TypeVar

from pyvirtrpc.errors import ConnectionClosed, Error, ProtocolError, RemoteError
from pyvirtrpc.gen.keepalive import KEEPALIVE_PROGRAM
from pyvirtrpc.gen.keepalive import Procedure as KeepaliveProcedure
from pyvirtrpc.gen.virnet import MessageError, MessageStatus, MessageType
from pyvirtrpc.sansio.framing import (
    MIN_PACKET,
    PREFIX,
    FrameDecoder,
    Packet,
    decode_packet,
    encode_packet,
)
from pyvirtrpc.sansio.keepalive import PING_PACKET, PONG_PACKET, Keepalive, KeepaliveAction
from pyvirtrpc.xdr import XdrError

T = TypeVar("T")

DEFAULT_MAX_IN_FLIGHT = 5  # the daemon's default max_client_requests
_SERIAL_MASK = 0xFFFFFFFF
_ABANDONED = object()
_REPLY, _MESSAGE, _STREAM, _STREAM_HOLE, _REPLY_WITH_FDS = (
    MessageType.REPLY, MessageType.MESSAGE, MessageType.STREAM, MessageType.STREAM_HOLE,
    MessageType.REPLY_WITH_FDS,
)
_OK, _ERROR = MessageStatus.OK, MessageStatus.ERROR
_TYPES = frozenset(MessageType)
_PING = KeepaliveProcedure.PING


class Reply(NamedTuple, Generic[T]):
    """A successful reply; ``payload`` is the XDR-encoded ``ret``."""

    token: T
    payload: bytes


class ErrorReply(NamedTuple, Generic[T]):
    """A call failed: a RemoteError from the peer, or a ProtocolError about its reply."""

    token: T
    error: Error


class ServerMessage(NamedTuple):
    """A MESSAGE packet the server sent on its own (an event), keepalive excluded."""

    prog: int
    proc: int
    payload: bytes


class StreamPacket(NamedTuple):
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

    def send_packet(self, packet: bytes) -> None:
        """Queue a whole packet as it is (a stream's data, finish or abort)."""
        self._outbox.append(packet)

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

    def receive_data(self, data: bytes | bytearray, now: float = 0.0) -> list[ClientEvent[T]]:
        """Feed bytes from the peer; returns what they mean, in order.

        Raises ProtocolError (FramingError included) when the peer broke the protocol in
        a way that ends the connection: bad framing, a reply nobody waits for, a CALL.
        """
        if self._closed is not None:
            return []
        if self.keepalive is not None and data:
            self.keepalive.received(now)
        events: list[ClientEvent[T]] = []
        for frame in self._decoder.feed_frames(data):
            # The header as plain ints: replies are by far the most common packets.
            _, prog, _, proc, kind, serial, status = PREFIX.unpack_from(frame)
            if kind == _REPLY:
                event = self._reply(prog, proc, serial, status, frame)
            elif kind == _MESSAGE:
                event = self._message(prog, proc, frame)
            elif kind in (_STREAM, _STREAM_HOLE):
                # libvirt's client ignores packets of streams it does not know
                event = StreamPacket(decode_packet(frame)) if serial in self._streams else None
            elif kind == _REPLY_WITH_FDS:
                event = self._reply(prog, proc, serial, status, frame, fds=True)
            else:
                name = MessageType(kind).name if kind in _TYPES else f"type {kind}"
                raise ProtocolError(
                    f"unexpected {name} packet from the server "
                    f"(prog {prog:#x}, proc {proc}, serial {serial})"
                )
            if event is not None:
                events.append(event)
        return events

    def _message(self, prog: int, proc: int, frame: bytes) -> ClientEvent[T] | None:
        if prog == KEEPALIVE_PROGRAM:
            if proc == _PING:
                self._outbox.append(PONG_PACKET)
            return None  # a PONG: receive_data already counted it as a sign of life
        return ServerMessage(prog, proc, frame[MIN_PACKET:])

    def _reply(self, prog: int, proc: int, serial: int, status: int, frame: bytes,
               fds: bool = False) -> ClientEvent[T] | None:
        token = self._in_flight.pop((prog, serial), None)
        if token is None:
            raise ProtocolError(
                f"reply for no call: prog {prog:#x}, serial {serial}, proc {proc}"
            )
        if self._queued:
            self._release_slot()
        if token is _ABANDONED:
            return None
        owner: T = token  # type: ignore[assignment]
        if fds:
            return ErrorReply(owner, ProtocolError("file descriptors in a reply are unsupported"))
        if status == _OK:
            return Reply(owner, frame[MIN_PACKET:])
        if status == _ERROR:
            try:
                error = MessageError.decode(frame[MIN_PACKET:])
            except XdrError as exc:
                return ErrorReply(owner, exc)
            return ErrorReply(owner, RemoteError.from_wire(error))
        return ErrorReply(owner, ProtocolError(f"reply with status {status}"))

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

