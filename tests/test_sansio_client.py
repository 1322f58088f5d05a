"""The client session state machine, without sockets."""

from __future__ import annotations

import pytest

from pyvirtrpc.errors import (
    ConnectionClosed,
    FramingError,
    NoDomainError,
    ProtocolError,
    RemoteError,
)
from pyvirtrpc.gen.remote import REMOTE_PROGRAM
from pyvirtrpc.gen.virnet import MessageError, MessageStatus, MessageType
from pyvirtrpc.sansio.client import (
    ClientSession,
    ErrorReply,
    Reply,
    ServerMessage,
    StreamPacket,
)
from pyvirtrpc.sansio.framing import FrameDecoder, Packet, encode_packet
from pyvirtrpc.sansio.keepalive import PING_PACKET, PONG_PACKET

QEMU_PROGRAM = 0x20008087


def reply(serial: int, payload: bytes = b"", *, prog: int = REMOTE_PROGRAM, proc: int = 1,
          status: MessageStatus = MessageStatus.OK,
          type: MessageType = MessageType.REPLY) -> bytes:
    return encode_packet(prog, 1, proc, type, serial, status, payload)


def sent(session: ClientSession[str]) -> list[Packet]:
    return FrameDecoder().feed(session.data_to_send())


def error_payload(code: int = 42, domain: int = 12, message: str = "no domain") -> bytes:
    return MessageError(code, domain, message, 2, None, "s1", None, None, 7, -1, None).encode()


def test_serials_start_at_zero_and_count_up() -> None:
    s: ClientSession[str] = ClientSession()
    assert [s.call(REMOTE_PROGRAM, 1, 66, b"", f"c{i}") for i in range(3)] == [0, 1, 2]
    packets = sent(s)
    assert [(p.serial, p.proc, p.type, p.status) for p in packets] == [
        (0, 66, MessageType.CALL, MessageStatus.OK),
        (1, 66, MessageType.CALL, MessageStatus.OK),
        (2, 66, MessageType.CALL, MessageStatus.OK),
    ]
    assert s.data_to_send() == b""


def test_call_bytes_are_libvirts() -> None:
    # CONNECT_OPEN of "test:///default", flags 0: the exact bytes virsh sends (serial 2).
    s: ClientSession[str] = ClientSession()
    s._next_serial = 2
    payload = bytes.fromhex("00000001 0000000f 746573743a2f2f2f64656661756c7400 00000000")
    s.call(REMOTE_PROGRAM, 1, 1, payload, "open")
    assert s.data_to_send() == bytes.fromhex(
        "00000038 20008086 00000001 00000001 00000000 00000002 00000000"
    ) + payload


def test_replies_match_by_serial_in_any_order() -> None:
    s: ClientSession[str] = ClientSession()
    for name in "abc":
        s.call(REMOTE_PROGRAM, 1, 16, b"", name)
    events = s.receive_data(reply(2, b"two") + reply(0, b"zero") + reply(1, b"one"))
    assert events == [Reply("c", b"two"), Reply("a", b"zero"), Reply("b", b"one")]
    assert s.in_flight == 0


def test_replies_match_by_program_too() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(QEMU_PROGRAM, 1, 1, b"", "qemu")
    with pytest.raises(ProtocolError, match="reply for no call"):
        s.receive_data(reply(0, prog=REMOTE_PROGRAM))
    s2: ClientSession[str] = ClientSession()
    s2.call(QEMU_PROGRAM, 1, 1, b"", "qemu")
    assert s2.receive_data(reply(0, b"x", prog=QEMU_PROGRAM)) == [Reply("qemu", b"x")]


def test_bytes_in_any_chunking() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 16, b"", "a")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "b")
    data = reply(0, b"\0\0\0\1") + reply(1, b"\0\0\0\2")
    events = []
    for i in range(len(data)):
        events += s.receive_data(data[i : i + 1])
    assert events == [Reply("a", b"\0\0\0\1"), Reply("b", b"\0\0\0\2")]


def test_error_reply_carries_every_field() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 23, b"", "lookup")
    [event] = s.receive_data(reply(0, error_payload(), status=MessageStatus.ERROR))
    assert isinstance(event, ErrorReply) and event.token == "lookup"
    err = event.error
    assert isinstance(err, NoDomainError)
    assert (err.code, err.domain, err.level, err.message) == (42, 12, 2, "no domain")
    assert (err.str1, err.str2, err.str3, err.int1, err.int2) == ("s1", None, None, 7, -1)


def test_malformed_error_body_fails_only_that_call() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 23, b"", "a")
    s.call(REMOTE_PROGRAM, 1, 23, b"", "b")
    [event] = s.receive_data(reply(0, b"\0\0\0", status=MessageStatus.ERROR))
    assert isinstance(event, ErrorReply) and isinstance(event.error, ProtocolError)
    assert not isinstance(event.error, RemoteError)
    assert s.receive_data(reply(1, b"ok")) == [Reply("b", b"ok")]


def test_reply_with_odd_status_or_fds_fails_the_call() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 1, b"", "a")
    s.call(REMOTE_PROGRAM, 1, 1, b"", "b")
    events = s.receive_data(
        reply(0, status=MessageStatus.CONTINUE)
        + reply(1, b"\0\0\0\0", type=MessageType.REPLY_WITH_FDS)
    )
    assert [type(e) for e in events] == [ErrorReply, ErrorReply]
    assert all(isinstance(e, ErrorReply) and type(e.error) is ProtocolError for e in events)


def test_unknown_serial_is_fatal() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 1, b"", "a")
    with pytest.raises(ProtocolError, match="serial 9"):
        s.receive_data(reply(9))


def test_bad_framing_is_fatal() -> None:
    s: ClientSession[str] = ClientSession()
    with pytest.raises(FramingError):
        s.receive_data(b"\0\0\0\3")


def test_call_from_server_is_fatal() -> None:
    s: ClientSession[str] = ClientSession()
    with pytest.raises(ProtocolError, match="CALL"):
        s.receive_data(encode_packet(REMOTE_PROGRAM, 1, 1, 0, 0, 0, b""))


def test_in_flight_limit_queues_the_rest() -> None:
    s: ClientSession[int] = ClientSession(max_in_flight=2)
    for i in range(5):
        assert s.call(REMOTE_PROGRAM, 1, 16, b"", i) == i
    assert [p.serial for p in FrameDecoder().feed(s.data_to_send())] == [0, 1]
    assert (s.in_flight, s.queued) == (2, 3)
    assert s.receive_data(reply(1)) == [Reply(1, b"")]
    assert [p.serial for p in FrameDecoder().feed(s.data_to_send())] == [2]
    s.receive_data(reply(0) + reply(2))
    assert [p.serial for p in FrameDecoder().feed(s.data_to_send())] == [3, 4]
    assert (s.in_flight, s.queued) == (2, 0)


def test_new_calls_do_not_overtake_queued_ones() -> None:
    s: ClientSession[int] = ClientSession(max_in_flight=1)
    s.call(REMOTE_PROGRAM, 1, 16, b"", 0)
    s.call(REMOTE_PROGRAM, 1, 16, b"", 1)
    s.data_to_send()
    s.receive_data(reply(0))
    s.call(REMOTE_PROGRAM, 1, 16, b"", 2)  # a slot is free, but 1 waited first
    assert [p.serial for p in FrameDecoder().feed(s.data_to_send())] == [1]


def test_abandoned_call_keeps_its_slot_until_its_late_reply() -> None:
    s: ClientSession[str] = ClientSession(max_in_flight=1)
    s.call(REMOTE_PROGRAM, 1, 16, b"", "slow")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "next")
    s.data_to_send()
    s.abandon(REMOTE_PROGRAM, 0)
    assert s.data_to_send() == b""  # the server still counts serial 0
    assert s.receive_data(reply(0, b"late")) == []  # dropped
    assert [p.serial for p in FrameDecoder().feed(s.data_to_send())] == [1]
    assert s.receive_data(reply(1, b"ok")) == [Reply("next", b"ok")]


def test_abandoned_queued_call_is_never_sent() -> None:
    s: ClientSession[str] = ClientSession(max_in_flight=1)
    s.call(REMOTE_PROGRAM, 1, 16, b"", "a")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "b")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "c")
    s.data_to_send()
    s.abandon(REMOTE_PROGRAM, 1)
    assert s.queued == 1
    s.receive_data(reply(0))
    assert [p.serial for p in FrameDecoder().feed(s.data_to_send())] == [2]
    with pytest.raises(ProtocolError):
        s.receive_data(reply(1))  # never sent, so a reply to it is a protocol error


def test_abandoning_an_answered_call_is_harmless() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 16, b"", "a")
    s.receive_data(reply(0))
    s.abandon(REMOTE_PROGRAM, 0)
    assert s.in_flight == 0


def test_ping_is_always_answered_and_not_an_event() -> None:
    s: ClientSession[str] = ClientSession()
    assert s.receive_data(PING_PACKET) == []
    assert s.data_to_send() == PONG_PACKET
    assert s.receive_data(PONG_PACKET) == []
    assert s.data_to_send() == b""


def test_pong_is_sent_even_with_every_slot_taken() -> None:
    s: ClientSession[str] = ClientSession(max_in_flight=1)
    s.call(REMOTE_PROGRAM, 1, 16, b"", "a")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "b")
    s.data_to_send()
    s.receive_data(PING_PACKET)
    assert s.data_to_send() == PONG_PACKET


def test_own_keepalive_pings_then_declares_the_peer_dead() -> None:
    s: ClientSession[str] = ClientSession()
    assert s.poll_keepalive(100.0) is False  # not started: nothing happens
    s.start_keepalive(5, 2, now=0.0)
    assert s.keepalive is not None and s.keepalive.deadline == 5.0
    assert s.poll_keepalive(4.0) is False
    assert s.data_to_send() == b""
    assert s.poll_keepalive(5.0) is False
    assert s.data_to_send() == PING_PACKET
    s.receive_data(PONG_PACKET, now=6.0)  # any packet resets the count
    assert s.keepalive.deadline == 11.0
    assert s.poll_keepalive(11.0) is False and s.data_to_send() == PING_PACKET
    assert s.poll_keepalive(16.0) is False and s.data_to_send() == PING_PACKET
    assert s.poll_keepalive(21.0) is True


def test_events_are_handed_over_by_program_and_procedure() -> None:
    s: ClientSession[str] = ClientSession()
    data = encode_packet(REMOTE_PROGRAM, 1, 318, MessageType.MESSAGE, 1, 0, b"body")
    data += encode_packet(QEMU_PROGRAM, 1, 6, MessageType.MESSAGE, 0, 0, b"qemu")
    assert s.receive_data(data) == [
        ServerMessage(REMOTE_PROGRAM, 318, b"body"),
        ServerMessage(QEMU_PROGRAM, 6, b"qemu"),
    ]


def test_events_interleave_with_replies() -> None:
    s: ClientSession[str] = ClientSession()
    s.call(REMOTE_PROGRAM, 1, 34, b"", "suspend")
    event = encode_packet(REMOTE_PROGRAM, 1, 318, MessageType.MESSAGE, 1, 0, b"e")
    assert s.receive_data(event + reply(0) + event) == [
        ServerMessage(REMOTE_PROGRAM, 318, b"e"),
        Reply("suspend", b""),
        ServerMessage(REMOTE_PROGRAM, 318, b"e"),
    ]


def test_stream_packets_go_by_serial() -> None:
    s: ClientSession[str] = ClientSession()
    s.open_stream(7)
    data7 = encode_packet(REMOTE_PROGRAM, 1, 211, MessageType.STREAM, 7, 2, b"data")
    data8 = encode_packet(REMOTE_PROGRAM, 1, 211, MessageType.STREAM, 8, 2, b"stray")
    [event] = s.receive_data(data7 + data8)
    assert isinstance(event, StreamPacket)
    assert (event.packet.serial, event.packet.payload) == (7, b"data")
    s.close_stream(7)
    assert s.receive_data(data7) == []


def test_close_fails_every_waiting_call_once() -> None:
    s: ClientSession[str] = ClientSession(max_in_flight=1)
    s.call(REMOTE_PROGRAM, 1, 16, b"", "sent")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "queued")
    s.call(REMOTE_PROGRAM, 1, 16, b"", "abandoned")
    s.abandon(REMOTE_PROGRAM, 2)
    reason = ConnectionClosed("peer went away")
    assert s.close(reason) == ["sent", "queued"]
    assert s.close(reason) == []
    assert s.closed
    with pytest.raises(ConnectionClosed, match="peer went away"):
        s.call(REMOTE_PROGRAM, 1, 16, b"", "later")
    assert s.receive_data(reply(0)) == []
    assert s.data_to_send() == b""


def test_serials_wrap_around() -> None:
    s: ClientSession[str] = ClientSession()
    s._next_serial = 0xFFFFFFFF
    assert s.call(REMOTE_PROGRAM, 1, 16, b"", "a") == 0xFFFFFFFF
    assert s.call(REMOTE_PROGRAM, 1, 16, b"", "b") == 0


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClientSession(max_in_flight=0)

