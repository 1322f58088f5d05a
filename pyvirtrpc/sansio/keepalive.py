"""Keepalive: liveness of a connection, as libvirt counts it (sans-IO).

Either side may PING; the other answers PONG. A side that runs keepalive sends a PING
after ``interval`` seconds without receiving anything, and gives up when ``count``
PINGs in a row went unanswered and another interval passed: about
``interval * (count + 1)`` seconds of silence. Any packet received counts as a sign of
life, not only a PONG.
"""

from __future__ import annotations

import enum

from pyvirtrpc.gen.keepalive import KEEPALIVE_PROGRAM, KEEPALIVE_PROTOCOL_VERSION, Procedure
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.sansio.framing import Packet, encode_packet

PING_PACKET = encode_packet(
    KEEPALIVE_PROGRAM, KEEPALIVE_PROTOCOL_VERSION, Procedure.PING, MessageType.MESSAGE, 0,
    MessageStatus.OK, b"",
)
PONG_PACKET = encode_packet(
    KEEPALIVE_PROGRAM, KEEPALIVE_PROTOCOL_VERSION, Procedure.PONG, MessageType.MESSAGE, 0,
    MessageStatus.OK, b"",
)


def is_ping(packet: Packet) -> bool:
    return packet.prog == KEEPALIVE_PROGRAM and packet.proc == Procedure.PING


def is_pong(packet: Packet) -> bool:
    return packet.prog == KEEPALIVE_PROGRAM and packet.proc == Procedure.PONG


class KeepaliveAction(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"  # send PING_PACKET
    DEAD = "dead"  # the peer is gone: close the connection


class Keepalive:
    """The timer state of one side; feed it the clock, it says what to do."""

    def __init__(self, interval: float, count: int, now: float) -> None:
        if interval <= 0 or count < 0:
            raise ValueError("keepalive needs interval > 0 and count >= 0")
        self.interval = interval
        self.count = count
        self.remaining = count
        self.deadline = now + interval

    def received(self, now: float) -> None:
        """Any packet arrived: the peer is alive."""
        self.remaining = self.count
        self.deadline = now + self.interval

    def poll(self, now: float) -> KeepaliveAction:
        """Call at or after ``deadline``; returns what to do now."""
        if now < self.deadline:
            return KeepaliveAction.NOTHING
        if self.remaining == 0:
            return KeepaliveAction.DEAD
        self.remaining -= 1
        self.deadline = now + self.interval
        return KeepaliveAction.PING
