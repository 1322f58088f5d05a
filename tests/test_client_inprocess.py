"""The Trio client against a tiny scripted daemon in the same process.

For what a real libvirtd will not do on request: malformed replies, unknown serials, a
peer that vanishes or goes silent, floods of events. Each test runs over both kinds of
stream the client handles differently: a socket pair (the direct-write path of unix and
tcp sockets) and trio's in-memory streams (the writer-task path of TLS and ssh).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakedaemon import DOM, OTHER, FakeDaemon, Handler

from pyvirtrpc import (
    CloseReason,
    ConnectionClosed,
    DomainEventID,
    EventsLost,
    InvalidArgError,
    NoSupportError,
    OperationDeniedError,
    ProtocolError,
    RemoteError,
)
from pyvirtrpc.client import Connection, Domain, open_connection_stream
from pyvirtrpc.errors import ErrorDomain, ErrorNumber
from pyvirtrpc.events import ConnectionClosedEvent, LifecycleEvent, encode_event
from pyvirtrpc.gen import qemu
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import REMOTE_PROGRAM
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.sansio.framing import Packet, encode_packet
from pyvirtrpc.sansio.keepalive import PING_PACKET
from pyvirtrpc.uri import parse_uri


async def _stream_pair(kind: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    if kind == "memory":
        return trio.testing.memory_stream_pair()
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


@pytest.fixture(params=["socketpair", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def connected(kind: str, uri: str | None = "test:///default", *, readonly: bool = False,
                    daemon_options: dict[str, Any] | None = None,
                    handlers: dict[int | tuple[int, int], Handler] | None = None,
                    **options: Any) -> AsyncIterator[tuple[Connection, FakeDaemon]]:
    client, server = await _stream_pair(kind)
    daemon = FakeDaemon(server, **(daemon_options or {}))
    daemon.handlers.update(handlers or {})
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.serve)
        target = parse_uri(uri, readonly=readonly) if uri is not None else None
        try:
            async with open_connection_stream(client, target, **options) as conn:
                yield conn, daemon
        except BaseException as exc:  # raised below, not as a group of the daemon's nursery
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


# ----------------------------------------------------------------- handshake


async def test_handshake_and_close_are_libvirts(kind: str) -> None:
    async with connected(kind) as (conn, daemon):
        assert daemon.procs() == [66, 60, 1, 60, 60]
        features = [a.feature for a in daemon.args(P.CONNECT_SUPPORTS_FEATURE)]
        assert features == [10, 14, 15]
        [open_args] = daemon.args(P.CONNECT_OPEN)
        assert (open_args.name, open_args.flags) == ("test:///default", 0)
        assert [c.serial for c in daemon.calls] == [0, 1, 2, 3, 4]
        assert (conn.server_keepalive, conn.server_event_callbacks,
                conn.server_close_callback) == (True, True, True)
        assert conn.uri == "test:///default"
    assert daemon.procs()[-1] == P.CONNECT_CLOSE
    assert conn.closed


async def test_no_uri_sends_empty_name_then_asks(kind: str) -> None:
    async with connected(kind, uri=None) as (conn, daemon):
        [open_args] = daemon.args(P.CONNECT_OPEN)
        assert open_args.name == ""
        assert daemon.procs() == [66, 60, 1, 110, 60, 60]
        assert conn.uri == "test:///default"


async def test_readonly_open_and_local_refusal(kind: str) -> None:
    async with connected(kind, readonly=True) as (conn, daemon):
        [open_args] = daemon.args(P.CONNECT_OPEN)
        assert open_args.flags == 1
        sent = len(daemon.calls)
        with pytest.raises(OperationDeniedError) as info:
            await Domain(conn, DOM).suspend()
        assert (info.value.code, info.value.domain) == (ErrorNumber.OPERATION_DENIED,
                                                        ErrorDomain.DOMAIN)
        assert "read only access prevents virDomainSuspend" in str(info.value)
        assert len(daemon.calls) == sent


async def test_sasl_is_refused_by_name_without_close(kind: str) -> None:
    with pytest.raises(RemoteError, match="SASL") as info:
        async with connected(kind, daemon_options={"auth": [wire.AuthType.SASL]}):
            pass
    assert info.value.code == ErrorNumber.AUTH_FAILED


async def test_polkit_authentication(kind: str) -> None:
    async with connected(kind, daemon_options={"auth": [wire.AuthType.POLKIT]}) as (_, daemon):
        assert daemon.procs()[:2] == [P.AUTH_LIST, P.AUTH_POLKIT]


async def test_requested_auth_type_must_be_offered(kind: str) -> None:
    with pytest.raises(RemoteError, match="requested authentication type polkit rejected"):
        async with connected(kind, "test:///default?auth=polkit"):
            pass


async def test_old_server_without_auth_list(kind: str) -> None:
    async def no_auth_list(daemon: FakeDaemon, call: Packet) -> None:
        await daemon.fail(call, RemoteError.create(ErrorNumber.NO_SUPPORT, ErrorDomain.RPC, "x"))

    async with connected(kind, handlers={P.AUTH_LIST: no_auth_list}) as (conn, daemon):
        assert daemon.procs()[:2] == [66, 60]
        assert await conn.get_hostname() == "fake"


async def test_user_errors_are_not_wrapped_in_groups(kind: str) -> None:
    with pytest.raises(ZeroDivisionError):
        async with connected(kind):
            1 / 0  # noqa: B018


# ------------------------------------------------------------------- calls


async def test_generic_call(kind: str) -> None:
    async with connected(kind) as (conn, _):
        ret = await conn.call(P.CONNECT_GET_HOSTNAME)
        assert ret == wire.ConnectGetHostnameRet("fake")
        assert await conn.call(P.DOMAIN_SUSPEND, wire.DomainSuspendArgs(DOM)) is None
        with pytest.raises(TypeError):
            await conn.call(P.DOMAIN_SUSPEND)
        with pytest.raises(NoSupportError, match="is an event"):
            await conn.call(P.DOMAIN_EVENT_LIFECYCLE, None)


async def test_malformed_reply_fails_only_that_call(kind: str) -> None:
    async def bad_info(daemon: FakeDaemon, call: Packet) -> None:
        await daemon.reply(call, b"\0\0\0\1")  # far too short for domain_get_info_ret

    async with connected(kind, handlers={P.DOMAIN_GET_INFO: bad_info}) as (conn, _):
        with pytest.raises(ProtocolError):
            await Domain(conn, DOM).info()
        assert await conn.get_hostname() == "fake"
        assert not conn.closed


async def test_reply_to_an_unknown_serial_closes_everything(kind: str) -> None:
    async def stray(daemon: FakeDaemon, call: Packet) -> None:
        await daemon.send(encode_packet(REMOTE_PROGRAM, 1, 16, 1, 4242, 0, b""))

    async with connected(kind, handlers={P.DOMAIN_GET_INFO: stray}) as (conn, _):
        with pytest.raises(ConnectionClosed, match="serial 4242"):
            await Domain(conn, DOM).info()
        with pytest.raises(ConnectionClosed):
            await conn.get_hostname()
        assert conn.closed


async def test_peer_vanishing_mid_call_fails_every_waiter_promptly(kind: str) -> None:
    arrived = trio.Event()

    async def hang_up(daemon: FakeDaemon, call: Packet) -> None:
        if len([c for c in daemon.calls if c.proc == P.DOMAIN_GET_INFO]) == 3:
            arrived.set()
            await trio.sleep(0.05)
            await daemon.stream.aclose()

    failures: list[BaseException] = []

    async def call(conn: Connection) -> None:
        try:
            await Domain(conn, DOM).info()
        except ConnectionClosed as exc:
            failures.append(exc)

    async with connected(kind, handlers={P.DOMAIN_GET_INFO: hang_up}) as (conn, _):
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(call, conn)
        assert len(failures) == 3
        with pytest.raises(ConnectionClosed):
            await conn.get_hostname()


# A relay's forwarded calls get their errors through callbacks, run while the connection
# is being lost; a callback that cancels a caller (the relay's client went too) must not
# make the connection wake that caller a second time: Trio's run queue is then corrupt
# (TrioInternalError, or AssertionError and a connection that never finishes closing).


async def test_a_call_whose_own_write_finds_the_peer_gone_raises_once() -> None:
    held = trio.Event()

    async def hold(daemon: FakeDaemon, call: Packet) -> None:
        held.set()

    scope = trio.CancelScope()
    async with connected("socketpair", handlers={P.CONNECT_GET_HOSTNAME: hold}) as (conn, daemon):
        with trio.fail_after(2), scope:
            conn.forward_call(REMOTE_PROGRAM, 1, P.CONNECT_GET_HOSTNAME, b"",
                              lambda result: scope.cancel())
            await held.wait()
            daemon.stream.socket.close()  # no checkpoint: our reader has not seen it
            with pytest.raises(ConnectionClosed):
                await conn.get_type()  # its own write fails: the connection is lost there
        assert conn.closed


async def test_a_forwarded_calls_failure_cancelling_a_waiting_caller() -> None:
    held: list[Packet] = []

    async def hold(daemon: FakeDaemon, call: Packet) -> None:
        held.append(call)

    scope = trio.CancelScope()
    failures: list[BaseException] = []

    async def caller(conn: Connection) -> None:
        with scope:
            try:
                await conn.get_type()
            except ConnectionClosed as exc:
                failures.append(exc)

    handlers: dict[int | tuple[int, int], Handler] = {
        P.CONNECT_GET_HOSTNAME: hold, P.CONNECT_GET_TYPE: hold}
    async with connected("socketpair", handlers=handlers) as (conn, daemon):
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                conn.forward_call(REMOTE_PROGRAM, 1, P.CONNECT_GET_HOSTNAME, b"",
                                  lambda result: scope.cancel())
                nursery.start_soon(caller, conn)
                while len(held) < 2:
                    await trio.sleep(0.01)
                await daemon.stream.aclose()
            await conn.wait_closed()
        assert len(failures) == 1  # woken once, by the connection, before the callback ran


async def test_in_flight_limit_queues_the_rest(kind: str) -> None:
    outstanding: list[Packet] = []
    peak = 0

    async def hold(daemon: FakeDaemon, call: Packet) -> None:
        nonlocal peak
        outstanding.append(call)
        peak = max(peak, len(outstanding))
        if len(outstanding) == 3:  # answer in batches, newest first
            while outstanding:
                await daemon.reply(outstanding.pop(), wire.DomainGetInfoRet(1, 2, 3, 4, 5))

    results: list[int] = []

    async def call(conn: Connection) -> None:
        results.append((await Domain(conn, DOM).info()).cpu_time)

    async with connected(kind, handlers={P.DOMAIN_GET_INFO: hold}, max_in_flight=3) as (conn, _):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(call, conn)
    assert results == [5] * 30
    assert peak == 3


async def test_cancelled_call_leaves_the_connection_healthy(kind: str) -> None:
    held: list[Packet] = []

    async def hold(daemon: FakeDaemon, call: Packet) -> None:
        held.append(call)

    async with connected(kind, handlers={P.DOMAIN_GET_INFO: hold}) as (conn, daemon):
        with trio.move_on_after(0.05) as scope:
            await Domain(conn, DOM).info()
        assert scope.cancelled_caught and len(held) == 1
        await daemon.reply(held[0], wire.DomainGetInfoRet(1, 2, 3, 4, 5))  # late: dropped
        assert await conn.get_hostname() == "fake"
        assert conn._session.in_flight == 0
        assert not conn.closed


async def test_pings_are_answered(kind: str) -> None:
    async with connected(kind, keepalive=None) as (conn, daemon):
        await daemon.send(PING_PACKET)
        with trio.fail_after(2):
            while daemon.pongs != 1:
                await trio.sleep(0.001)
        assert await conn.get_hostname() == "fake"


async def test_silent_peer_is_declared_dead_by_keepalive(kind: str) -> None:
    async def never(daemon: FakeDaemon, call: Packet) -> None:
        pass

    async with connected(kind, handlers={P.DOMAIN_GET_INFO: never},
                         daemon_options={"answer_pings": False},
                         keepalive=(0.1, 2)) as (conn, _), \
            conn.domain_events(DomainEventID.LIFECYCLE) as events:
        start = trio.current_time()
        with trio.fail_after(3), pytest.raises(ConnectionClosed, match="keepalive"):
            await Domain(conn, DOM).info()
        assert 0.25 <= trio.current_time() - start < 1.0
        assert [item async for item in events] == [ConnectionClosedEvent(CloseReason.KEEPALIVE)]


# ------------------------------------------------------------------ events


def lifecycle(dom: wire.NonnullDomain, event: int, callback_id: int | None) -> tuple[int, bytes]:
    return encode_event(LifecycleEvent(dom, event, 0), callback_id)


async def test_one_registration_fans_out_and_overflow_is_reported(kind: str) -> None:
    async with connected(kind) as (conn, daemon):
        dom = Domain(conn, DOM)
        async with conn.domain_events(DomainEventID.LIFECYCLE, domain=dom, buffer=3) as slow, \
                conn.domain_events(DomainEventID.LIFECYCLE, domain=dom) as fast:
            [register] = daemon.args(P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)
            assert (register.eventID, register.dom) == (0, DOM)
            for i in range(10):
                await daemon.event(*lifecycle(DOM, i % 9, callback_id=1))
            await conn.get_hostname()  # every event has been read by now
            got_fast = [await fast.receive() for _ in range(10)]
            assert [e.event for e in got_fast] == [i % 9 for i in range(10)]  # type: ignore[union-attr]
            got_slow = [await slow.receive() for _ in range(4)]
            assert [getattr(e, "event", None) for e in got_slow[:3]] == [0, 1, 2]
            assert got_slow[3] == EventsLost(7)
            await daemon.event(*lifecycle(DOM, 4, callback_id=1))
            await conn.get_hostname()
            item = await slow.receive()
            assert isinstance(item, LifecycleEvent) and item.event == 4
        assert [a.callbackID for a in
                daemon.args(P.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY)] == [1]


async def test_loss_marker_sits_where_events_went_missing(kind: str) -> None:
    async with connected(kind) as (conn, daemon), \
            conn.domain_events(DomainEventID.LIFECYCLE, buffer=2) as events:
        for i in range(5):
            await daemon.event(*lifecycle(DOM, i, callback_id=1))
        await conn.get_hostname()
        assert [getattr(await events.receive(), "event", None)] == [0]
        await daemon.event(*lifecycle(DOM, 7, callback_id=1))  # room for one again
        await conn.get_hostname()
        rest = [await events.receive() for _ in range(3)]
        assert getattr(rest[0], "event", None) == 1
        assert rest[1] == EventsLost(3)
        assert getattr(rest[2], "event", None) == 7


async def test_events_for_other_registrations_are_not_delivered(kind: str) -> None:
    async with connected(kind) as (conn, daemon), \
            conn.domain_events(DomainEventID.LIFECYCLE) as events:
        await daemon.event(*lifecycle(DOM, 1, callback_id=99))
        await daemon.event(*lifecycle(DOM, 2, callback_id=1))
        item = await events.receive()
        assert isinstance(item, LifecycleEvent) and item.event == 2


async def test_legacy_registration_without_feature_14(kind: str) -> None:
    async with connected(kind, daemon_options={"features": {10: 1}}) as (conn, daemon):
        async with conn.domain_events(DomainEventID.LIFECYCLE, domain=Domain(conn, DOM)) as a, \
                conn.domain_events(DomainEventID.LIFECYCLE) as b:
            assert [x.eventID for x in daemon.args(P.CONNECT_DOMAIN_EVENT_REGISTER_ANY)] == [0]
            await daemon.event(*lifecycle(OTHER, 2, callback_id=None))
            await daemon.event(*lifecycle(DOM, 3, callback_id=None))
            first = await a.receive()  # filtered here: only DOM's
            assert isinstance(first, LifecycleEvent) and first.domain == DOM
            assert [getattr(await b.receive(), "domain", None) for _ in range(2)] == [OTHER, DOM]
            with pytest.raises(NoSupportError, match="feature 14"):
                async with conn.domain_events(DomainEventID.BLOCK_THRESHOLD):
                    pass
        assert [x.eventID for x in daemon.args(P.CONNECT_DOMAIN_EVENT_DEREGISTER_ANY)] == [0]


async def test_subscriber_sees_the_connection_close(kind: str) -> None:
    async def hang_up(daemon: FakeDaemon, call: Packet) -> None:
        await daemon.stream.aclose()

    async with connected(kind, handlers={P.DOMAIN_SUSPEND: hang_up}) as (conn, daemon):
        async with conn.domain_events() as events:
            assert len(daemon.args(P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)) == 27
            await daemon.event(*encode_event(ConnectionClosedEvent(0), 0))
            with pytest.raises(ConnectionClosed):
                await Domain(conn, DOM).suspend()
            items = [item async for item in events]
        assert items == [ConnectionClosedEvent(0), ConnectionClosedEvent(CloseReason.EOF)]
        await conn.wait_closed()


async def test_network_events_use_their_own_procedures(kind: str) -> None:
    async with connected(kind) as (conn, daemon):
        async with conn.network_events():
            [args] = daemon.args(P.CONNECT_NETWORK_EVENT_REGISTER_ANY)
            assert (args.eventID, args.net) == (0, None)
        assert [a.callbackID for a in daemon.args(P.CONNECT_NETWORK_EVENT_DEREGISTER_ANY)] == [1]


async def test_registration_failure_reaches_the_subscriber(kind: str) -> None:
    async def refuse(daemon: FakeDaemon, call: Packet) -> None:
        await daemon.fail(call, RemoteError.create(ErrorNumber.INVALID_ARG, 0, "nope"))

    register = P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY
    async with connected(kind, handlers={register: refuse}) as (conn, _):
        with pytest.raises(InvalidArgError):
            async with conn.domain_events(DomainEventID.REBOOT):
                pass
        assert conn._registrations == {}
        assert await conn.get_hostname() == "fake"


# --------------------------------------------------------- block threshold


async def test_threshold_percent_is_converted_from_capacity(kind: str) -> None:
    async with connected(kind) as (conn, daemon):
        dom = Domain(conn, DOM)
        await dom.set_block_threshold("vda[1]", percent=12.5)
        [info] = daemon.args(P.DOMAIN_GET_BLOCK_INFO)
        assert info.path == "vda"
        [args] = daemon.args(P.DOMAIN_SET_BLOCK_THRESHOLD)
        assert (args.dev, args.threshold, args.flags) == ("vda[1]", 125, 0)


@pytest.mark.parametrize("percent", [100.001, 150, -1])
async def test_threshold_percent_above_100_is_refused_before_sending(kind: str,
                                                                     percent: float) -> None:
    async with connected(kind) as (conn, daemon):
        sent = len(daemon.calls)
        with pytest.raises(InvalidArgError) as info:
            await Domain(conn, DOM).set_block_threshold("vda", percent=percent)
        assert (info.value.code, info.value.domain) == (ErrorNumber.INVALID_ARG,
                                                        ErrorDomain.DOMAIN)
        assert len(daemon.calls) == sent


async def test_threshold_needs_exactly_one_form(kind: str) -> None:
    async with connected(kind) as (conn, _):
        with pytest.raises(TypeError):
            await Domain(conn, DOM).set_block_threshold("vda")
        with pytest.raises(TypeError):
            await Domain(conn, DOM).set_block_threshold("vda", 1, percent=1)


async def test_qemu_and_remote_procedures_of_the_same_number_stay_apart(kind: str) -> None:
    async def monitor(daemon: FakeDaemon, call: Packet) -> None:
        await daemon.reply(call, qemu.DomainMonitorCommandRet("ok"))

    async with connected(kind, handlers={(qemu.QEMU_PROGRAM, 1): monitor}) as (conn, daemon):
        assert await Domain(conn, DOM).qemu_monitor_command("info block", hmp=True) == "ok"
        [call] = [c for c in daemon.calls if c.prog == qemu.QEMU_PROGRAM]
        args = qemu.DomainMonitorCommandArgs.decode(call.payload)
        assert (call.proc, args.cmd, args.flags) == (1, "info block", 1)


async def test_pings_are_answered_while_idle_with_keepalive(kind: str) -> None:
    # Between calls, with no subscriber, the background reader may sleep until the next
    # keepalive tick: the daemon's ping is still answered, within about one interval.
    async with connected(kind, keepalive=(0.05, 100)) as (conn, daemon):
        assert await conn.get_hostname() == "fake"
        await daemon.send(PING_PACKET)
        with trio.fail_after(1):
            while daemon.pongs != 1:
                await trio.sleep(0.001)
        assert not conn.closed


async def test_events_are_read_while_idle(kind: str) -> None:
    async with connected(kind, keepalive=(60, 5)) as (conn, daemon), \
            conn.domain_events(DomainEventID.LIFECYCLE) as events:
        assert await conn.get_hostname() == "fake"  # a call came and went
        await daemon.event(*lifecycle(DOM, 3, callback_id=1))
        with trio.fail_after(1):
            item = await events.receive()
        assert isinstance(item, LifecycleEvent) and item.event == 3


async def test_wait_closed_notices_a_hang_up_between_calls(kind: str) -> None:
    async with connected(kind, keepalive=(60, 5)) as (conn, daemon):
        assert await conn.get_hostname() == "fake"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.wait_closed)
            await trio.sleep(0.01)
            await daemon.stream.aclose()
            with trio.fail_after(1):
                await conn.wait_closed()
        assert conn.closed
