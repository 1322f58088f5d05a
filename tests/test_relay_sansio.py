"""The relay's pieces without sockets: the server session's forwarding, the policy.

(The relay itself, with real daemons and clients, is in test_relay_libvirtd.py and
test_relay_qemu.py.)
"""

from __future__ import annotations

import pytest
from test_server_sansio import call_bytes, new_session, replies

from pyvirtrpc.backends.relay import PROGRAMS, Policy, procedure_key
from pyvirtrpc.errors import ErrorDomain, ErrorNumber
from pyvirtrpc.gen import qemu, remote
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.procedures import lookup
from pyvirtrpc.sansio.framing import Packet
from pyvirtrpc.sansio.server import Call, Forward, Overflow, ServerSession

REMOTE = remote.REMOTE_PROGRAM


def forwarding_session(**options: object) -> ServerSession:
    session = new_session(programs=PROGRAMS, **options)
    session.forwarding = True
    (call,) = session.receive_data(
        call_bytes(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0), 1), 0.0)
    assert isinstance(call, Call)
    session.opened(call)
    replies(session)
    return session


def test_before_open_the_session_answers_as_libvirtd() -> None:
    session = new_session()
    session.forwarding = True
    assert session.receive_data(call_bytes(P.CONNECT_GET_HOSTNAME, serial=0), 0.0) == []
    (packet,) = replies(session)
    assert packet.status == MessageStatus.ERROR  # hypervisor connection not open


def test_after_open_every_call_is_forwarded_undecoded() -> None:
    session = forwarding_session()
    args = remote.DomainLookupByNameArgs("test").encode()
    todo = session.receive_data(
        call_bytes(P.DOMAIN_LOOKUP_BY_NAME, args, 2)
        + call_bytes(9999, b"\x01\x02", 3)  # unknown to pyvirtrpc: forwarded all the same
        + call_bytes(P.DOMAIN_GET_INFO, b"\x00", 4)  # does not decode: the upstream says so
        + call_bytes(1, b"", 5, prog=qemu.QEMU_PROGRAM), 0.0)
    assert todo == [
        Forward(REMOTE, 1, P.DOMAIN_LOOKUP_BY_NAME, MessageType.CALL, 2, 0, args,
                lookup(REMOTE, P.DOMAIN_LOOKUP_BY_NAME)),
        Forward(REMOTE, 1, 9999, MessageType.CALL, 3, 0, b"\x01\x02", None),
        Forward(REMOTE, 1, P.DOMAIN_GET_INFO, MessageType.CALL, 4, 0, b"\x00",
                lookup(REMOTE, P.DOMAIN_GET_INFO)),
        Forward(qemu.QEMU_PROGRAM, 1, 1, MessageType.CALL, 5, 0, b"",
                lookup(qemu.QEMU_PROGRAM, 1)),
    ]
    assert session.in_flight == 4 and replies(session) == []
    # the backend answers with whole packets; each REPLY frees its slot once sent
    session.send_packet(Packet(REMOTE, 1, 9999, MessageType.REPLY, 3, MessageStatus.ERROR,
                               b"error"))
    assert replies(session) == [Packet(REMOTE, 1, 9999, MessageType.REPLY, 3,
                                       MessageStatus.ERROR, b"error")]
    assert session.in_flight == 3


def test_the_session_keeps_its_own_procedures() -> None:
    session = forwarding_session(readonly=True)
    todo = session.receive_data(
        call_bytes(P.AUTH_LIST, serial=2)
        + call_bytes(P.CONNECT_SUPPORTS_FEATURE, remote.ConnectSupportsFeatureArgs(10), 3)
        + call_bytes(P.CONNECT_REGISTER_CLOSE_CALLBACK, serial=4)
        + call_bytes(P.CONNECT_SUPPORTS_FEATURE, remote.ConnectSupportsFeatureArgs(9), 5)
        + call_bytes(P.DOMAIN_SUSPEND, remote.DomainSuspendArgs(
            remote.NonnullDomain("test", bytes(16), 1)), 6), 0.0)
    # feature 9 is the backend's to answer (decoded); a write on a read-only connection
    # is forwarded too: the upstream, opened read-only, refuses it in its own words
    assert [type(item) for item in todo] == [Call, Forward]
    assert [p.serial for p in replies(session)] == [2, 3, 4]
    assert session.close_callback and session.keepalive is not None
    assert session.receive_data(call_bytes(P.CONNECT_CLOSE, serial=7), 0.0) == []
    assert session.closing


def test_stream_packets_are_forwarded_without_a_request_slot() -> None:
    session = forwarding_session(max_requests=1)
    stream = call_bytes(P.STORAGE_VOL_UPLOAD, b"data", 7, type=MessageType.STREAM, status=2)
    hole = call_bytes(P.STORAGE_VOL_UPLOAD, bytes(12), 7, type=MessageType.STREAM_HOLE,
                      status=2)
    todo = session.receive_data(stream + hole, 0.0)
    assert [(f.type, f.serial, f.payload) for f in todo] == [  # type: ignore[union-attr]
        (MessageType.STREAM, 7, b"data"), (MessageType.STREAM_HOLE, 7, bytes(12))]
    assert session.in_flight == 0 and session.wants_read


def test_forwarded_events_and_stream_data_are_bounded() -> None:
    session = forwarding_session(max_queued_events=2)
    message = Packet(REMOTE, 1, 385, MessageType.MESSAGE, 1, MessageStatus.OK, b"event")
    session.send_packet(message)
    session.send_packet(message)
    with pytest.raises(Overflow):
        session.send_packet(message)


# ---------------------------------------------------------------------------- policy


@pytest.mark.parametrize(("spec", "key"), [
    ("DOMAIN_SET_BLOCK_THRESHOLD", (REMOTE, 386)),
    ("domain_set_block_threshold", (REMOTE, 386)),
    ("REMOTE_PROC_DOMAIN_SUSPEND", (REMOTE, 34)),
    ("QEMU_PROC_DOMAIN_MONITOR_COMMAND", (qemu.QEMU_PROGRAM, 1)),
    ("DOMAIN_MONITOR_COMMAND", (qemu.QEMU_PROGRAM, 1)),  # not a remote name: qemu's
    ("29", (REMOTE, 29)),
    (29, (REMOTE, 29)),
    ("qemu:1", (qemu.QEMU_PROGRAM, 1)),
    ("LXC:4", (0x00068000, 4)),
])
def test_procedures_are_named_as_users_name_them(spec: str | int, key: tuple[int, int]) -> None:
    assert procedure_key(spec) == key


@pytest.mark.parametrize("spec", ["NO_SUCH_THING", "xen:1", "qemu:x", "REMOTE_PROC_"])
def test_unknown_procedures_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="procedure"):
        procedure_key(spec)


def test_policy() -> None:
    info = lookup(REMOTE, P.DOMAIN_SUSPEND)
    everything = Policy()
    assert everything.refusal(REMOTE, 34, info) is None
    assert everything.refusal(REMOTE, 9999, None) is None

    read_only = Policy.build(read_only=True)
    refused = read_only.refusal(REMOTE, 34, info)
    assert refused is not None and (refused.code, refused.domain, refused.message) == (
        ErrorNumber.OPERATION_DENIED, ErrorDomain.DOMAIN,
        "operation forbidden: read only access prevents virDomainSuspend")
    assert read_only.refusal(REMOTE, P.DOMAIN_GET_INFO, lookup(REMOTE, 16)) is None
    unknown = read_only.refusal(REMOTE, 9999, None)
    assert unknown is not None and unknown.message == (
        "operation forbidden: read only access prevents remote:9999")

    denying = Policy.build(deny=["DOMAIN_SUSPEND", "qemu:1"])
    refused = denying.refusal(REMOTE, 34, info)
    assert refused is not None and (refused.code, refused.domain, refused.str2) == (
        ErrorNumber.ACCESS_DENIED, ErrorDomain.ACCESS,
        "the relay's policy does not allow virDomainSuspend")
    assert denying.refusal(qemu.QEMU_PROGRAM, 1, lookup(qemu.QEMU_PROGRAM, 1)) is not None
    assert denying.refusal(REMOTE, 28, lookup(REMOTE, 28)) is None

    allowing = Policy.build(allow=["DOMAIN_GET_INFO"])
    assert allowing.refusal(REMOTE, 16, lookup(REMOTE, 16)) is None
    assert allowing.refusal(REMOTE, 9999, None) is not None
