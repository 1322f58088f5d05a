"""Packets and the byte-stream framing of libvirt's RPC protocol.

On the wire a packet is a big-endian u32 length word that counts the whole packet,
itself included, then a 24-byte header, then the payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyvirtrpc.errors import FramingError
from pyvirtrpc.gen.virnet import (
    VIR_NET_MESSAGE_HEADER_MAX,
    VIR_NET_MESSAGE_LEN_MAX,
    VIR_NET_MESSAGE_MAX,
    MessageStatus,
    MessageType,
)

HEADER = struct.Struct(">IIiiIi")
LENGTH = struct.Struct(">I")
PREFIX = struct.Struct(">IIIiiIi")  # the length word and the header together
MIN_PACKET = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_HEADER_MAX
MAX_PACKET = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_MAX

_TYPES = {t.value: t for t in MessageType}
_STATUSES = {s.value: s for s in MessageStatus}


@dataclass(frozen=True, slots=True)
class Packet:
    prog: int
    vers: int
    proc: int
    type: MessageType
    serial: int
    status: MessageStatus
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        return encode_packet(
            self.prog, self.vers, self.proc, self.type, self.serial, self.status, self.payload
        )


def encode_packet(
    prog: int, vers: int, proc: int, type: int, serial: int, status: int, payload: bytes
) -> bytes:
    size = MIN_PACKET + len(payload)
    if size > MAX_PACKET:
        raise FramingError(f"packet of {size} bytes exceeds the limit of {MAX_PACKET}")
    return PREFIX.pack(size, prog, vers, proc, type, serial, status) + payload


def decode_packet(data: bytes) -> Packet:
    """Decode one whole packet (length word included)."""
    if len(data) < MIN_PACKET:
        raise FramingError(f"packet of {len(data)} bytes is shorter than a header")
    size, prog, vers, proc, type_, serial, status = PREFIX.unpack_from(data)
    if size != len(data):
        raise FramingError(f"length word says {size} bytes, packet has {len(data)}")
    message_type = _TYPES.get(type_)
    message_status = _STATUSES.get(status)
    if message_type is None:
        raise FramingError(f"unknown message type {type_} (serial {serial}, proc {proc})")
    if message_status is None:
        raise FramingError(f"unknown message status {status} (serial {serial}, proc {proc})")
    return Packet(prog, vers, proc, message_type, serial, message_status, data[MIN_PACKET:])


class FrameDecoder:
    """Turn byte chunks of any size into packets.

    The length word is checked before any of the packet is buffered, so a peer cannot
    make us allocate more than ``max_packet`` bytes.
    """

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        return [decode_packet(frame) for frame in self.feed_frames(data)]

    def feed_frames(self, data: bytes | bytearray) -> list[bytes]:
        """Like :meth:`feed`, but return each whole packet undecoded (length word included).

        Only the length word is checked; a server uses this to treat packets with unknown
        types or statuses one by one, as libvirtd does, instead of dropping the connection.
        """
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= 4:
            (size,) = LENGTH.unpack_from(buffer, start)
            if size < MIN_PACKET or size > self.max_packet:
                raise FramingError(
                    f"invalid packet length {size} (must be {MIN_PACKET}..{self.max_packet})"
                )
            if len(buffer) - start < size:
                break
            frames.append(bytes(buffer[start : start + size]))
            start += size
        if start:
            del buffer[:start]
        return frames
