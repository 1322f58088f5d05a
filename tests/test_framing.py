"""Sans-IO framing: byte chunks of any size in, typed packets out; packets back to bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import GOLDEN, golden, golden_names

from pyvirtrpc.errors import FramingError
from pyvirtrpc.gen import remote
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.sansio.framing import FrameDecoder, Packet, decode_packet, encode_packet

TEST_UUID = bytes.fromhex("6695eb01f6a4830479aa97f2502e193f")  # the test driver's "test"
NAMES = golden_names()
STREAM = b"".join(golden(name) for name in NAMES)
EXPECTED = [decode_packet(golden(name)) for name in NAMES]


def feed_in_chunks(data: bytes, cuts: list[int]) -> tuple[list[Packet], FrameDecoder]:
    decoder = FrameDecoder()
    packets: list[Packet] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        packets += decoder.feed(data[start:end])
    return packets, decoder


def test_the_stream_holds_many_packets() -> None:
    assert len(NAMES) >= 10
    assert len(STREAM) == sum(len(p.to_bytes()) for p in EXPECTED)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 27, 28, 29, 64, 100, 1000, len(STREAM)])
def test_fixed_chunk_sizes(size: int) -> None:
    packets, decoder = feed_in_chunks(STREAM, list(range(size, len(STREAM), size)))
    assert packets == EXPECTED
    assert decoder.pending == 0


def test_every_chunk_size() -> None:
    for size in range(1, len(STREAM) + 1):
        packets, decoder = feed_in_chunks(STREAM, list(range(size, len(STREAM), size)))
        assert packets == EXPECTED, size
        assert decoder.pending == 0


def test_one_byte_at_a_time_reports_each_packet_on_its_last_byte() -> None:
    decoder = FrameDecoder()
    ends = []
    for i in range(len(STREAM)):
        got = decoder.feed(STREAM[i : i + 1])
        if got:
            assert len(got) == 1
            ends.append(i + 1)
        assert decoder.pending == i + 1 - (ends[-1] if ends else 0)
    lengths = [len(golden(name)) for name in NAMES]
    assert ends == [sum(lengths[: k + 1]) for k in range(len(lengths))]


@given(st.lists(st.integers(0, len(STREAM)), max_size=40).map(sorted))
def test_random_chunking(cuts: list[int]) -> None:
    packets, decoder = feed_in_chunks(STREAM, cuts)
    assert packets == EXPECTED
    assert decoder.pending == 0


def test_several_packets_in_one_chunk_and_a_partial_one() -> None:
    decoder = FrameDecoder()
    first, second = golden("auth_list_reply.bin"), golden("connect_open_call.bin")
    packets = decoder.feed(first + second + second[:10])
    assert [p.proc for p in packets] == [66, 1]
    assert decoder.pending == 10
    assert decoder.feed(second[10:]) == [decode_packet(second)]
    assert decoder.pending == 0
    assert decoder.feed(b"") == []


def test_feed_frames_returns_whole_packets_undecoded() -> None:
    unknown_type = bytearray(golden("connect_open_call.bin"))
    unknown_type[19] = 9  # type 9 does not exist
    frames = FrameDecoder().feed_frames(golden("auth_list_reply.bin") + bytes(unknown_type))
    assert frames == [golden("auth_list_reply.bin"), bytes(unknown_type)]
    with pytest.raises(FramingError, match="unknown message type 9"):
        FrameDecoder().feed(bytes(unknown_type))


@pytest.mark.parametrize("name", NAMES)
def test_header_fields_and_to_bytes(name: str) -> None:
    index = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))
    entry = next(e for e in index["packets"] if e["file"] == name)
    data = golden(name)
    packet = decode_packet(data)
    header = entry["header"]
    assert (packet.prog, packet.vers, packet.proc, packet.serial) == (
        header["prog"],
        header["vers"],
        header["proc"],
        header["serial"],
    )
    assert packet.type is MessageType(header["type"])
    assert packet.status is MessageStatus(header["status"])
    assert MessageType(header["type"]).name == entry["type_name"]
    assert len(packet.payload) == entry["length"] - 28 == len(data) - 28
    assert packet.to_bytes() == data
    assert encode_packet(*header.values(), packet.payload) == data


def test_connect_open_bytes_of_protocol_notes_2_1() -> None:
    expected = bytes.fromhex(
        "00000038 20008086 00000001 00000001 00000000 00000002 00000000"
        "00000001 0000000f 746573743a2f2f2f64656661756c74 00 00000000"
    )
    payload = remote.ConnectOpenArgs("test:///default", 0).encode()
    packet = Packet(
        remote.REMOTE_PROGRAM,
        remote.REMOTE_PROTOCOL_VERSION,
        remote.Procedure.CONNECT_OPEN,
        MessageType.CALL,
        2,
        MessageStatus.OK,
        payload,
    )
    assert packet.to_bytes() == expected == golden("connect_open_call.bin")
    assert FrameDecoder().feed(expected) == [packet]


def test_block_threshold_event_bytes_of_protocol_notes_3_5() -> None:
    expected = bytes.fromhex(
        "0000006c 20008086 00000001 00000181 00000002 00000001 00000000"
        "00000007"
        "00000004 74657374" + TEST_UUID.hex() + "00000001"
        "00000006 7664615b315d0000"
        "00000001 0000000c 2f696d672f612e71636f7732"
        "0000000040000000"
        "0000000000010000"
    )
    assert len(expected) == 108
    msg = remote.DomainEventBlockThresholdMsg(
        7, remote.NonnullDomain("test", TEST_UUID, 1), "vda[1]", "/img/a.qcow2", 1 << 30, 65536
    )
    packet = Packet(
        remote.REMOTE_PROGRAM,
        1,
        remote.Procedure.DOMAIN_EVENT_BLOCK_THRESHOLD,
        MessageType.MESSAGE,
        1,
        MessageStatus.OK,
        msg.encode(),
    )
    assert packet.to_bytes() == expected
    (decoded,) = FrameDecoder().feed(expected)
    assert decoded == packet
    assert remote.DomainEventBlockThresholdMsg.decode(decoded.payload) == msg
