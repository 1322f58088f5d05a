"""The sans-IO server session: libvirtd's rules, byte for byte where libvirtd's bytes are known.

Expected errors are the ones a real libvirtd 9.0 (test driver) sent to raw probes; the
golden packets in tests/golden were captured from it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from pyvirtrpc.errors import ErrorDomain, ErrorNumber, FramingError, RemoteError
from pyvirtrpc.events import (
    BlockThresholdEvent,
    ConnectionClosedEvent,
    EventFamily,
    LifecycleEvent,
)
from pyvirtrpc.gen import remote
from pyvirtrpc.gen.keepalive import KEEPALIVE_PROGRAM
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.virnet import MessageError, MessageStatus, MessageType
from pyvirtrpc.sansio.framing import FrameDecoder, Packet, decode_packet, encode_packet
from pyvirtrpc.sansio.keepalive import PING_PACKET, PONG_PACKET, KeepaliveAction
from pyvirtrpc.sansio.server import (
    Call,
    CloseBackend,
    Overflow,
    ServerSession,
    api_error_domain,
)

GOLDEN = Path(__file__).parent / "golden"
REMOTE = remote.REMOTE_PROGRAM
TEST_DOMAIN = remote.NonnullDomain(
    "test", bytes.fromhex("6695eb01f6a4830479aa97f2502e193f"), 1
)
OTHER_DOMAIN = remote.NonnullDomain("other", b"\x11" * 16, 2)


def golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.bin").read_bytes()


def new_session(**options: object) -> ServerSession:
    ids = itertools.count()
    return ServerSession(next_callback_id=lambda: next(ids), **options)  # type: ignore[arg-type]


def call_bytes(proc: int, args: object = None, serial: int = 0, prog: int = REMOTE,
               vers: int = 1, type: int = MessageType.CALL, status: int = 0) -> bytes:
    payload = args if isinstance(args, bytes) else (b"" if args is None else args.encode())  # type: ignore[attr-defined]
    return encode_packet(prog, vers, proc, type, serial, status, payload)


def replies(session: ServerSession) -> list[Packet]:
    return FrameDecoder().feed(session.data_to_send())


def error_of(packet: Packet) -> MessageError:
    assert packet.type == MessageType.REPLY and packet.status == MessageStatus.ERROR
    return MessageError.decode(packet.payload)


def opened_session(readonly: bool = False, flags: int = 0, **options: object) -> ServerSession:
    session = new_session(readonly=readonly, **options)
    (call,) = session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", flags), 1), 0.0
    )
    assert isinstance(call, Call)
    assert session.opened(call) is None
    replies(session)
    return session


# ---------------------------------------------------------------------- golden bytes


def test_auth_list_reply_is_libvirtds() -> None:
    session = new_session()
    assert session.receive_data(call_bytes(P.AUTH_LIST, serial=0), 0.0) == []
    assert session.data_to_send() == golden("auth_list_reply")


def test_unknown_procedure_error_is_libvirtds_byte_for_byte() -> None:
    request = decode_packet(golden("unknown_proc_call"))
    session = opened_session()
    session.receive_data(golden("unknown_proc_call"), 0.0)
    assert session.data_to_send() == golden("unknown_proc_error_reply")
    assert request.proc == 999999


def test_unknown_program_error_is_libvirtds_byte_for_byte() -> None:
    reply = decode_packet(golden("unknown_program_error_reply"))
    session = new_session()
    session.receive_data(call_bytes(1, None, reply.serial, prog=reply.prog), 0.0)
    assert session.data_to_send() == golden("unknown_program_error_reply")


def test_keepalive_pong_is_libvirtds() -> None:
    session = new_session()
    assert session.receive_data(golden("keepalive_ping"), 0.0) == []
    assert session.data_to_send() == golden("keepalive_pong")
    assert session.in_flight == 0  # keepalive takes no request slot


# ---------------------------------------------------------------------- packets


def test_bad_length_word_raises() -> None:
    with pytest.raises(FramingError):
        new_session().receive_data(b"\x00\x00\x00\x03", 0.0)
    with pytest.raises(FramingError):
        new_session().receive_data((33554437).to_bytes(4, "big"), 0.0)


def test_partial_packets_wait_for_the_rest() -> None:
    session = new_session()
    data = call_bytes(P.AUTH_LIST)
    for i in range(len(data) - 1):
        assert session.receive_data(data[i:i + 1], 0.0) == []
    assert session.data_to_send() == b""
    session.receive_data(data[-1:], 0.0)
    assert replies(session)[0].proc == P.AUTH_LIST


@pytest.mark.parametrize("kind", [MessageType.REPLY, MessageType.MESSAGE, MessageType.STREAM,
                                  MessageType.REPLY_WITH_FDS, MessageType.STREAM_HOLE, 99])
def test_non_call_packets_are_dropped_silently(kind: int) -> None:
    session = opened_session()
    state = remote.DomainGetStateArgs(TEST_DOMAIN, 0)
    assert session.receive_data(call_bytes(P.DOMAIN_GET_STATE, state, 5, type=kind), 0.0) == []
    assert session.data_to_send() == b""
    assert session.in_flight == 0
    (call,) = session.receive_data(call_bytes(P.DOMAIN_GET_STATE, state, 6), 0.0)
    assert isinstance(call, Call) and call.serial == 6  # the connection goes on


def test_call_with_bad_status_is_refused() -> None:
    session = opened_session()
    session.receive_data(call_bytes(P.DOMAIN_GET_STATE, remote.DomainGetStateArgs(
        TEST_DOMAIN, 0), 9, status=99), 0.0)
    (reply,) = replies(session)
    assert (reply.proc, reply.serial) == (P.DOMAIN_GET_STATE, 9)
    error = error_of(reply)
    assert (error.code, error.domain, error.message) == (39, 7, "Unexpected message status 99")
    assert (error.str1, error.str2, error.int1, error.int2) == (
        "%s", "Unexpected message status 99", -1, -1)


def test_undecodable_arguments() -> None:
    session = opened_session()
    session.receive_data(call_bytes(P.DOMAIN_GET_INFO, b"", 3), 0.0)
    assert error_of(replies(session)[0]).message == "Unable to decode message payload"


def test_trailing_bytes_are_ignored_as_libvirtd_ignores_them() -> None:
    session = opened_session()
    args = remote.DomainGetStateArgs(TEST_DOMAIN, 0).encode() + b"abcd"
    (call,) = session.receive_data(call_bytes(P.DOMAIN_GET_STATE, args, 3), 0.0)
    assert isinstance(call, Call) and call.args == remote.DomainGetStateArgs(TEST_DOMAIN, 0)


def test_program_numbers_print_as_signed_ints() -> None:
    session = new_session()
    session.receive_data(call_bytes(1, None, 1, prog=0x87539319, vers=3), 0.0)
    assert error_of(replies(session)[0]).message == "Cannot find program -2024565991 version 3"


def test_keepalive_call_is_an_unknown_program() -> None:
    session = new_session()
    session.receive_data(call_bytes(1, None, 0, prog=KEEPALIVE_PROGRAM), 0.0)
    assert error_of(replies(session)[0]).message == "Cannot find program 1801807216 version 1"


def test_unknown_version_of_a_known_program() -> None:
    session = new_session()
    session.receive_data(call_bytes(1, None, 0, vers=2), 0.0)
    assert error_of(replies(session)[0]).message == "Cannot find program 536903814 version 2"


def test_an_event_procedure_called_is_unknown() -> None:
    session = opened_session()
    session.receive_data(call_bytes(P.DOMAIN_EVENT_LIFECYCLE, b"", 4), 0.0)
    assert error_of(replies(session)[0]).message == "unknown procedure: 107"


def test_calls_are_passed_on_with_decoded_args() -> None:
    session = opened_session()
    args = remote.DomainLookupByNameArgs("test")
    (call,) = session.receive_data(call_bytes(P.DOMAIN_LOOKUP_BY_NAME, args, 7), 0.0)
    assert isinstance(call, Call)
    assert (call.procedure, call.serial, call.args) == (P.DOMAIN_LOOKUP_BY_NAME, 7, args)
    session.reply(call, remote.DomainLookupByNameRet(TEST_DOMAIN))
    (reply,) = replies(session)
    assert (reply.type, reply.status, reply.serial) == (MessageType.REPLY, MessageStatus.OK, 7)
    assert remote.DomainLookupByNameRet.decode(reply.payload).dom == TEST_DOMAIN


def test_backend_errors_go_out_as_error_replies() -> None:
    session = opened_session()
    (call,) = session.receive_data(call_bytes(P.DOMAIN_SET_BLOCK_THRESHOLD, remote.
                                   DomainSetBlockThresholdArgs(TEST_DOMAIN, "vda", 1, 0), 7), 0.0)
    assert isinstance(call, Call)
    session.fail(call, RemoteError.report(ErrorNumber.NO_SUPPORT, ErrorDomain.DOMAIN,
                                          "virDomainSetBlockThreshold"))
    expected = decode_packet(golden("error_reply_no_support"))
    assert replies(session) == [expected]


# ---------------------------------------------------------------------- open / close


def test_calls_before_open_are_refused() -> None:
    session = new_session()
    session.receive_data(call_bytes(P.CONNECT_GET_TYPE, None, 3), 0.0)
    error = error_of(replies(session)[0])
    assert (error.code, error.domain, error.message, error.str1, error.str2) == (
        1, 7, "internal error: hypervisor connection not open", "internal error: %s",
        "hypervisor connection not open")
    assert (error.int1, error.int2) == (-1, -1)


def test_open_without_name_is_refused() -> None:
    session = new_session()
    session.receive_data(call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs(None, 0), 1), 0.0)
    assert error_of(replies(session)[0]).message == "internal error: connection not open"


def test_second_open_fails_and_drops_the_first_as_libvirtd_does() -> None:
    session = opened_session()
    todo = session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0), 2), 0.0
    )
    assert todo == [CloseBackend()]
    assert error_of(replies(session)[0]).message == "internal error: connection already open"
    session.receive_data(call_bytes(P.CONNECT_GET_TYPE, None, 3), 0.0)
    assert error_of(replies(session)[0]).message == (
        "internal error: hypervisor connection not open")


def test_open_while_opening() -> None:
    session = new_session()
    (first,) = session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0), 1), 0.0
    )
    session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0), 2), 0.0
    )
    assert isinstance(first, Call)
    assert session.opened(first) == CloseBackend()
    packets = replies(session)
    assert error_of(packets[0]).message == "internal error: connection already open"
    assert packets[1].status == MessageStatus.OK and not session.is_open


def test_close_replies_then_closes() -> None:
    session = opened_session()
    session.receive_data(call_bytes(P.CONNECT_CLOSE, None, 4) + call_bytes(
        P.CONNECT_GET_TYPE, None, 5), 0.0)
    assert session.closing and not session.wants_read
    (reply,) = replies(session)  # the call after CONNECT_CLOSE is never read
    assert (reply.proc, reply.status) == (P.CONNECT_CLOSE, MessageStatus.OK)


# ---------------------------------------------------------------------- features, keepalive


def test_keepalive_feature_is_answered_before_open_and_starts_the_timer() -> None:
    session = new_session(keepalive_interval=5, keepalive_count=2)
    session.receive_data(call_bytes(P.CONNECT_SUPPORTS_FEATURE,
                                    remote.ConnectSupportsFeatureArgs(10), 1), 100.0)
    assert remote.ConnectSupportsFeatureRet.decode(replies(session)[0].payload).supported == 1
    assert session.keepalive is not None and session.keepalive.deadline == 105.0
    assert session.poll_keepalive(105.0) is KeepaliveAction.PING
    assert session.data_to_send() == PING_PACKET
    session.receive_data(PONG_PACKET, 106.0)  # any packet counts as a sign of life
    assert session.poll_keepalive(110.9) is KeepaliveAction.NOTHING
    assert session.poll_keepalive(111.0) is KeepaliveAction.PING
    assert session.poll_keepalive(116.0) is KeepaliveAction.PING
    assert session.poll_keepalive(121.0) is KeepaliveAction.DEAD


def test_no_keepalive_unless_asked() -> None:
    session = opened_session()
    assert session.poll_keepalive(1000.0) is KeepaliveAction.NOTHING


@pytest.mark.parametrize("feature", [8, 14, 15])
def test_features_libvirtd_supports_itself(feature: int) -> None:
    session = opened_session()
    session.receive_data(call_bytes(P.CONNECT_SUPPORTS_FEATURE,
                                    remote.ConnectSupportsFeatureArgs(feature), 1), 0.0)
    assert remote.ConnectSupportsFeatureRet.decode(replies(session)[0].payload).supported == 1


def test_other_features_go_to_the_backend_after_open() -> None:
    session = new_session()
    args = remote.ConnectSupportsFeatureArgs(9)
    session.receive_data(call_bytes(P.CONNECT_SUPPORTS_FEATURE, args, 1), 0.0)
    assert "not open" in (error_of(replies(session)[0]).message or "")
    session = opened_session()
    (call,) = session.receive_data(call_bytes(P.CONNECT_SUPPORTS_FEATURE, args, 1), 0.0)
    assert isinstance(call, Call) and call.args == args


# ---------------------------------------------------------------------- read-only


def test_read_only_socket_refuses_writes_with_libvirts_error() -> None:
    session = opened_session(readonly=True)
    session.receive_data(call_bytes(P.DOMAIN_SUSPEND, remote.DomainSuspendArgs(TEST_DOMAIN), 3),
                         0.0)
    error = error_of(replies(session)[0])
    assert (error.code, error.domain) == (ErrorNumber.OPERATION_DENIED, ErrorDomain.DOMAIN)
    assert error.message == "operation forbidden: read only access prevents virDomainSuspend"
    assert (error.str1, error.str2) == ("operation forbidden: %s",
                                        "read only access prevents virDomainSuspend")
    (call,) = session.receive_data(call_bytes(P.DOMAIN_GET_STATE, remote.DomainGetStateArgs(
        TEST_DOMAIN, 0), 4), 0.0)
    assert isinstance(call, Call)  # reading is fine


def test_read_only_flag_on_a_read_write_socket() -> None:
    session = opened_session(flags=1)
    session.receive_data(call_bytes(P.DOMAIN_DEFINE_XML, remote.DomainDefineXmlArgs("<x/>"), 3),
                         0.0)
    assert error_of(replies(session)[0]).message == (
        "operation forbidden: read only access prevents virDomainDefineXML")


def test_read_only_socket_marks_the_open_call() -> None:
    session = new_session(readonly=True)
    (call,) = session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0), 1), 0.0)
    assert isinstance(call, Call) and call.readonly


@pytest.mark.parametrize(("api", "domain"), [
    ("virDomainSuspend", ErrorDomain.DOMAIN),
    ("virNodeGetInfo", ErrorDomain.DOMAIN),
    ("virDomainQemuMonitorCommand", ErrorDomain.NONE),
    ("virDomainSnapshotNum", ErrorDomain.DOMAIN_SNAPSHOT),
    ("virConnectSecretEventRegisterAny", ErrorDomain.SECRET),
    ("virConnectNetworkEventRegisterAny", ErrorDomain.NETWORK),
    ("virNodeNumOfDevices", ErrorDomain.NODEDEV),
    ("virStoragePoolGetInfo", ErrorDomain.STORAGE),
])
def test_error_domain_of_an_api_is_its_source_files(api: str, domain: ErrorDomain) -> None:
    assert api_error_domain(api) == domain


# ---------------------------------------------------------------------- in-flight limit


def test_at_most_max_requests_in_flight_the_rest_waits_unread() -> None:
    session = opened_session(max_requests=5)
    state = remote.DomainGetStateArgs(TEST_DOMAIN, 0)
    data = b"".join(call_bytes(P.DOMAIN_GET_STATE, state, serial) for serial in range(10, 17))
    calls = session.receive_data(data, 0.0)
    assert [c.serial for c in calls if isinstance(c, Call)] == [10, 11, 12, 13, 14]
    assert not session.wants_read and session.in_flight == 5
    assert session.resume(0.0) == []  # nothing freed yet
    for call in calls[:2]:
        assert isinstance(call, Call)
        session.reply(call, remote.DomainGetStateRet(1, 0))
    assert session.in_flight == 5  # slots are held until the replies leave
    assert len(replies(session)) == 2
    assert [c.serial for c in session.resume(0.0) if isinstance(c, Call)] == [15, 16]
    assert session.in_flight == 5 and session.wants_read is False


def test_refused_calls_count_until_their_error_leaves() -> None:
    session = new_session(max_requests=2)
    session.receive_data(call_bytes(P.CONNECT_GET_TYPE, None, 1) * 3, 0.0)
    assert session.in_flight == 2 and not session.wants_read
    assert len(replies(session)) == 2
    session.resume(0.0)
    assert len(replies(session)) == 1 and session.wants_read


# ---------------------------------------------------------------------- event relay


def register(session: ServerSession, proc: P, args: object = None, serial: int = 20) -> Packet:
    session.receive_data(call_bytes(proc, args, serial), 0.0)
    (reply,) = replies(session)
    return reply


def callback_id(reply: Packet) -> int:
    return remote.ConnectDomainEventCallbackRegisterAnyRet.decode(reply.payload).callbackID


def test_registration_rules_match_libvirtd() -> None:
    """The sequence of a raw probe against libvirtd 9.0, with its answers."""
    session = opened_session()
    any_ = remote.ConnectDomainEventRegisterAnyArgs
    cb = remote.ConnectDomainEventCallbackRegisterAnyArgs
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_REGISTER_ANY, any_(16))).message == (
        "internal error: unsupported event ID 16")
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_REGISTER_ANY, any_(-1))).str2 == (
        "unsupported event ID -1")
    error = error_of(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
                              remote.ConnectDomainEventCallbackDeregisterAnyArgs(777)))
    assert (error.code, error.domain, error.message) == (
        1, 7, "internal error: domain event callback 777 not registered")
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_DEREGISTER_ANY, remote.
                             ConnectDomainEventDeregisterAnyArgs(3))).message == (
        "internal error: domain event 3 not registered")
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_DEREGISTER)).message == (
        "internal error: domain event 0 not registered")
    reply = register(session, P.CONNECT_DOMAIN_EVENT_REGISTER)
    assert reply.payload == b"\0\0\0\0"  # cb_registered, always 0
    tracked = error_of(register(session, P.CONNECT_DOMAIN_EVENT_REGISTER))
    assert (tracked.code, tracked.domain, tracked.message, tracked.str1, tracked.str2) == (
        8, 0, "invalid argument: event callback already tracked", "invalid argument: %s",
        "event callback already tracked")
    # across styles: 316 for the same ID and (no) filter is a duplicate
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                             cb(0, None))).code == 8
    assert callback_id(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                                cb(0, TEST_DOMAIN))) == 1
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                             cb(0, TEST_DOMAIN))).code == 8
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                             cb(27, TEST_DOMAIN))).message == (
        "internal error: unsupported event ID 27")
    assert callback_id(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                                cb(24, None))) == 2
    assert register(session, P.CONNECT_DOMAIN_EVENT_REGISTER_ANY, any_(1)).status == 0
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                             cb(1, None))).code == 8
    # 168 removes the first registration of that ID, whatever its style: 105's, then 316's
    deregister = remote.ConnectDomainEventDeregisterAnyArgs(0)
    assert register(session, P.CONNECT_DOMAIN_EVENT_DEREGISTER_ANY, deregister).status == 0
    assert register(session, P.CONNECT_DOMAIN_EVENT_DEREGISTER_ANY, deregister).status == 0
    assert error_of(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
                             remote.ConnectDomainEventCallbackDeregisterAnyArgs(1))).message == (
        "internal error: domain event callback 1 not registered")
    assert [r[1:] for r in session.registrations] == [(24, None, 2), (1, None, 3)]


def test_other_families_registration_texts() -> None:
    session = opened_session()
    error = error_of(register(session, P.CONNECT_NETWORK_EVENT_REGISTER_ANY,
                              remote.ConnectNetworkEventRegisterAnyArgs(5, None)))
    assert error.message == "internal error: unsupported network event ID 5"
    reply = register(session, P.CONNECT_NETWORK_EVENT_REGISTER_ANY,
                     remote.ConnectNetworkEventRegisterAnyArgs(0, None))
    assert remote.ConnectNetworkEventRegisterAnyRet.decode(reply.payload).callbackID == 0
    assert error_of(register(session, P.CONNECT_NETWORK_EVENT_REGISTER_ANY,
                             remote.ConnectNetworkEventRegisterAnyArgs(0, None))).code == 8
    for proc, args, name in [
        (P.CONNECT_NETWORK_EVENT_DEREGISTER_ANY, remote.ConnectNetworkEventDeregisterAnyArgs,
         "network"),
        (P.CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY,
         remote.ConnectStoragePoolEventDeregisterAnyArgs, "storage pool"),
        (P.CONNECT_NODE_DEVICE_EVENT_DEREGISTER_ANY,
         remote.ConnectNodeDeviceEventDeregisterAnyArgs, "node device"),
        (P.CONNECT_SECRET_EVENT_DEREGISTER_ANY, remote.ConnectSecretEventDeregisterAnyArgs,
         "node device"),  # sic: libvirtd 9.0's text
    ]:
        assert error_of(register(session, proc, args(9))).message == (
            f"internal error: {name} event callback 9 not registered")
    # callback IDs are shared by all families (one counter, as a libvirt driver has)
    assert callback_id(register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                                remote.ConnectDomainEventCallbackRegisterAnyArgs(0, None))) == 1


def test_families_the_backend_lacks_are_not_supported() -> None:
    session = opened_session()
    session.event_families = frozenset({EventFamily.DOMAIN})
    error = error_of(register(session, P.CONNECT_SECRET_EVENT_REGISTER_ANY,
                              remote.ConnectSecretEventRegisterAnyArgs(0, None)))
    assert (error.code, error.domain, error.message) == (
        3, 30,
        "this function is not supported by the connection driver: "
        "virConnectSecretEventRegisterAny")


def lifecycle(domain: remote.NonnullDomain = TEST_DOMAIN) -> LifecycleEvent:
    return LifecycleEvent(domain, 3, 0)


def test_events_reach_each_matching_registration_in_its_form() -> None:
    session = opened_session()
    register(session, P.CONNECT_DOMAIN_EVENT_REGISTER_ANY,
             remote.ConnectDomainEventRegisterAnyArgs(0))  # legacy: callback 0
    register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
             remote.ConnectDomainEventCallbackRegisterAnyArgs(0, TEST_DOMAIN))  # callback 1
    assert session.send_event(lifecycle()) == 2
    legacy, modern = replies(session)
    assert (legacy.proc, legacy.type, legacy.serial, legacy.status) == (107, 2, 1, 0)
    # the bytes libvirtd sent for "test" suspended (PROTOCOL-NOTES 3.4)
    body = ("00000004 74657374 6695eb01f6a4830479aa97f2502e193f 00000001 00000003 00000000")
    assert legacy.payload == bytes.fromhex(body.replace(" ", ""))
    assert (modern.proc, modern.serial) == (318, 1)
    assert modern.payload == bytes.fromhex("00000001" + body.replace(" ", ""))
    assert session.send_event(lifecycle(OTHER_DOMAIN)) == 1  # the filter keeps the other out
    assert [p.proc for p in replies(session)] == [107]


def test_block_threshold_event_bytes() -> None:
    """The 385 packet of PROTOCOL-NOTES 3.5, byte for byte (callback ID 7 there)."""
    ids = iter([7])
    session = ServerSession(next_callback_id=lambda: next(ids))
    (call,) = session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0), 1), 0.0)
    assert isinstance(call, Call)
    session.opened(call)
    replies(session)
    register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
             remote.ConnectDomainEventCallbackRegisterAnyArgs(24, None))
    session.send_event(BlockThresholdEvent(TEST_DOMAIN, "vda[1]", "/img/a.qcow2", 1 << 30, 65536))
    expected = (
        "0000006c 20008086 00000001 00000181 00000002 00000001 00000000 00000007 "
        "00000004 74657374 6695eb01f6a4830479aa97f2502e193f 00000001 00000006 7664615b315d0000 "
        "00000001 0000000c 2f696d672f612e71636f7732 0000000040000000 0000000000010000"
    )
    assert session.data_to_send() == bytes.fromhex(expected.replace(" ", ""))


def test_no_events_without_registration_or_before_open() -> None:
    assert new_session().send_event(lifecycle()) == 0
    session = opened_session()
    assert session.send_event(lifecycle()) == 0
    assert session.data_to_send() == b""


def test_connection_closed_event_needs_the_close_callback() -> None:
    session = opened_session()
    assert session.send_event(ConnectionClosedEvent(1)) == 0
    register(session, P.CONNECT_REGISTER_CLOSE_CALLBACK)
    assert session.send_event(ConnectionClosedEvent(1)) == 1
    (packet,) = replies(session)
    assert (packet.proc, packet.payload) == (362, b"\0\0\0\1")


def test_event_queue_overflow() -> None:
    session = opened_session(max_queued_events=3)
    register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
             remote.ConnectDomainEventCallbackRegisterAnyArgs(0, None))
    for _ in range(3):
        session.send_event(lifecycle())
    with pytest.raises(Overflow):
        session.send_event(lifecycle())
    assert len(replies(session)) == 3
    session.send_event(lifecycle())  # room again once sent
    assert session.queued_events == 1


def test_second_open_forgets_registrations() -> None:
    session = opened_session()
    register(session, P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
             remote.ConnectDomainEventCallbackRegisterAnyArgs(0, None))
    session.receive_data(call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("x", 0), 5), 0.0)
    assert session.registrations == []


def test_golden_index_describes_the_packets_used_here() -> None:
    index = json.loads((GOLDEN / "index.json").read_text())
    files = {entry["file"] for entry in index["packets"]}
    assert {"unknown_proc_error_reply.bin", "auth_list_reply.bin", "keepalive_pong.bin"} <= files


def test_call_with_fds_without_fds_is_a_call() -> None:
    session = opened_session()
    args = b"\0\0\0\0" + remote.DomainGetStateArgs(TEST_DOMAIN, 0).encode()
    (call,) = session.receive_data(
        call_bytes(P.DOMAIN_GET_STATE, args, 3, type=MessageType.CALL_WITH_FDS), 0.0)
    assert isinstance(call, Call) and call.args == remote.DomainGetStateArgs(TEST_DOMAIN, 0)
    session.reply(call, remote.DomainGetStateRet(1, 0))
    assert replies(session)[0].type == MessageType.REPLY


def test_call_passing_fds_ends_the_connection() -> None:
    session = opened_session()
    args = b"\0\0\0\1" + remote.DomainCreateArgs(TEST_DOMAIN).encode()
    with pytest.raises(FramingError, match="file descriptors"):
        session.receive_data(
            call_bytes(P.DOMAIN_CREATE, args, 3, type=MessageType.CALL_WITH_FDS), 0.0)
