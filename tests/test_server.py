"""The Trio server over real sockets: limits, keepalive, slow clients, listeners.

Clients here are raw: they send hand-made packets and read what comes back, so every
rule is checked on the wire.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from pyvirtrpc.backends import BackendConnection, EmitEvent, implements
from pyvirtrpc.backends.mock import MockBackend, MockHypervisor
from pyvirtrpc.events import LifecycleEvent
from pyvirtrpc.gen import remote
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.virnet import MessageError, MessageStatus, MessageType
from pyvirtrpc.sansio.framing import FrameDecoder, Packet, encode_packet
from pyvirtrpc.sansio.keepalive import PONG_PACKET, is_ping
from pyvirtrpc.server import Server, TcpAddress, UnixAddress

REMOTE = remote.REMOTE_PROGRAM
TEST_DOMAIN = remote.NonnullDomain("test", bytes.fromhex("6695eb01f6a4830479aa97f2502e193f"), 1)


class RawClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.packets: list[Packet] = []
        self.serial = 0

    async def send(self, proc: int, args: Any = None, prog: int = REMOTE) -> int:
        serial, self.serial = self.serial, self.serial + 1
        payload = b"" if args is None else args.encode()
        await self.stream.send_all(
            encode_packet(prog, 1, proc, MessageType.CALL, serial, MessageStatus.OK, payload)
        )
        return serial

    async def receive(self) -> Packet | None:
        """The next packet, or None at end of stream."""
        while not self.packets:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.packets += self.decoder.feed(data)
        return self.packets.pop(0)

    async def reply(self, serial: int) -> Packet:
        """The reply to ``serial`` (events before it are kept for later)."""
        kept: list[Packet] = []
        while True:
            packet = await self.receive()
            assert packet is not None, "connection closed"
            if packet.type == MessageType.REPLY and packet.serial == serial:
                self.packets[:0] = kept
                return packet
            kept.append(packet)

    async def call(self, proc: int, args: Any = None, prog: int = REMOTE) -> Packet:
        return await self.reply(await self.send(proc, args, prog))

    async def open(self, name: str = "test:///default") -> None:
        await self.call(P.AUTH_LIST)
        reply = await self.call(P.CONNECT_OPEN, remote.ConnectOpenArgs(name, 0))
        assert reply.status == MessageStatus.OK


@asynccontextmanager
async def serving(tmp_path: Path, backend: Any = None, **options: Any
                  ) -> AsyncIterator[tuple[Server, Path]]:
    server = Server(backend or MockBackend(), **options)
    path = tmp_path / "sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, UnixAddress(path),
                            UnixAddress(tmp_path / "sock-ro", readonly=True))
        yield server, path
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connected(path: Path) -> AsyncIterator[RawClient]:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        yield RawClient(stream)


async def test_socket_files_appear_ready_and_go_away(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(tmp_path / "sock-ro").st_mode) == 0o777
        async with connected(path) as client:
            reply = await client.call(P.AUTH_LIST)
            assert remote.AuthListRet.decode(reply.payload).types == [remote.AuthType.NONE]
    assert not path.exists() and not (tmp_path / "sock-ro").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


async def test_read_only_socket(tmp_path: Path) -> None:
    async with serving(tmp_path), connected(tmp_path / "sock-ro") as client:
        await client.open()
        reply = await client.call(P.DOMAIN_SUSPEND, remote.DomainSuspendArgs(TEST_DOMAIN))
        error = MessageError.decode(reply.payload)
        assert error.message == "operation forbidden: read only access prevents virDomainSuspend"


async def test_tcp_listener(tmp_path: Path) -> None:
    server = Server(MockBackend())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, TcpAddress("127.0.0.1", 0))
        stream = await trio.open_tcp_stream("127.0.0.1", server.tcp_ports[0])
        async with stream:
            client = RawClient(stream)
            await client.open()
            reply = await client.call(P.CONNECT_GET_TYPE)
            assert remote.ConnectGetTypeRet.decode(reply.payload).type == "TEST"
        nursery.cancel_scope.cancel()


async def test_connect_close_replies_then_closes(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, path), connected(path) as client:
        await client.open()
        reply = await client.call(P.CONNECT_CLOSE)
        assert reply.status == MessageStatus.OK
        assert await client.receive() is None


async def test_unknown_uri_is_refused_as_libvirtd_does(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, path), connected(path) as client:
        reply = await client.call(P.CONNECT_OPEN, remote.ConnectOpenArgs("foo:///bar", 0))
        error = MessageError.decode(reply.payload)
        assert (error.code, error.domain, error.message) == (
            5, 0, "no connection driver available for foo:///bar")
        reply = await client.call(P.CONNECT_OPEN, remote.ConnectOpenArgs("", 0))
        assert reply.status == MessageStatus.OK
        uri = remote.ConnectGetUriRet.decode((await client.call(P.CONNECT_GET_URI)).payload)
        assert uri.uri == "test:///default"
    for name in ("qemu:///system", "qemu:///session", "test:///default?mode=legacy"):
        async with serving(tmp_path) as (_, path), connected(path) as client:
            await client.open(name)
            reply = await client.call(P.CONNECT_GET_URI)
            assert remote.ConnectGetUriRet.decode(reply.payload).uri == name


class SlowConnection(BackendConnection):
    """GET_INFO waits until released; GET_TYPE fails with a bug."""

    def __init__(self, backend: SlowBackend) -> None:
        self.backend = backend

    @implements(P.DOMAIN_GET_INFO)
    async def get_info(self, args: remote.DomainGetInfoArgs) -> remote.DomainGetInfoRet:
        self.backend.running += 1
        self.backend.most = max(self.backend.most, self.backend.running)
        await self.backend.release.wait()
        self.backend.running -= 1
        return remote.DomainGetInfoRet(1, 2, 3, 4, 5)

    @implements(P.CONNECT_GET_TYPE)
    def get_type(self) -> remote.ConnectGetTypeRet:
        raise ZeroDivisionError("a backend bug")

    async def aclose(self) -> None:
        self.backend.closed += 1


class SlowBackend:
    programs = frozenset({REMOTE})

    def __init__(self) -> None:
        self.release = trio.Event()
        self.running = self.most = self.closed = 0

    async def open(self, name: str, readonly: bool, emit: EmitEvent) -> BackendConnection:
        return SlowConnection(self)


async def test_in_flight_limit_stops_reading_until_replies_leave(tmp_path: Path) -> None:
    backend = SlowBackend()
    async with serving(tmp_path, backend, max_requests=5) as (_, path), \
            connected(path) as client:
        await client.open()
        serials = [await client.send(P.DOMAIN_GET_INFO, remote.DomainGetInfoArgs(TEST_DOMAIN))
                   for _ in range(8)]
        await trio.sleep(0.2)
        assert backend.running == 5  # the other three are not even read
        backend.release.set()
        for serial in serials:
            reply = await client.reply(serial)
            assert remote.DomainGetInfoRet.decode(reply.payload).cpuTime == 5
        assert backend.most == 5


async def test_backend_bug_answers_an_internal_error(tmp_path: Path) -> None:
    backend = SlowBackend()
    async with serving(tmp_path, backend) as (_, path), connected(path) as client:
        await client.open()
        error = MessageError.decode((await client.call(P.CONNECT_GET_TYPE)).payload)
        assert (error.code, error.domain) == (1, 7)
        assert error.message == "internal error: virConnectGetType: a backend bug"
        # unimplemented: libvirt's "not supported by the connection driver"
        error = MessageError.decode((await client.call(P.CONNECT_GET_HOSTNAME)).payload)
        assert (error.code, error.domain, error.message) == (
            3, 20, "this function is not supported by the connection driver: "
            "virConnectGetHostname")
        reply = await client.call(P.CONNECT_SUPPORTS_FEATURE,
                                  remote.ConnectSupportsFeatureArgs(9))
        assert remote.ConnectSupportsFeatureRet.decode(reply.payload).supported == 0


async def test_second_open_closes_the_backend_connection(tmp_path: Path) -> None:
    backend = SlowBackend()
    async with serving(tmp_path, backend) as (_, path), connected(path) as client:
        await client.open()
        reply = await client.call(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0))
        assert reply.status == MessageStatus.ERROR
        await trio.sleep(0.05)
        assert backend.closed == 1


async def test_max_clients_leaves_the_rest_in_the_backlog(tmp_path: Path) -> None:
    async with serving(tmp_path, max_clients=2) as (server, path):
        first = await trio.open_unix_socket(str(path))
        async with connected(path) as second:
            await second.call(P.AUTH_LIST)
            async with connected(path) as third:
                await third.send(P.AUTH_LIST)
                with trio.move_on_after(0.3) as waited:
                    await third.receive()
                assert waited.cancelled_caught  # not served while two clients are there
                await first.aclose()
                with trio.fail_after(5):
                    packet = await third.receive()
                assert packet is not None and packet.proc == P.AUTH_LIST
        assert len(server.clients) <= 2


async def test_keepalive_pings_a_silent_client_then_drops_it(tmp_path: Path) -> None:
    async with serving(tmp_path, keepalive_interval=0.1, keepalive_count=2) as (_, path), \
            connected(path) as client:
        await client.call(P.CONNECT_SUPPORTS_FEATURE, remote.ConnectSupportsFeatureArgs(10))
        start = trio.current_time()
        pings = 0
        with trio.fail_after(5):
            while (packet := await client.receive()) is not None:
                assert is_ping(packet)
                pings += 1
        assert pings == 2
        assert 0.25 < trio.current_time() - start < 2


async def test_keepalive_keeps_an_answering_client(tmp_path: Path) -> None:
    async with serving(tmp_path, keepalive_interval=0.1, keepalive_count=1) as (_, path), \
            connected(path) as client:
        await client.call(P.CONNECT_SUPPORTS_FEATURE, remote.ConnectSupportsFeatureArgs(10))
        with trio.move_on_after(0.6):
            while (packet := await client.receive()) is not None:
                assert is_ping(packet)
                await client.stream.send_all(PONG_PACKET)
        reply = await client.call(P.AUTH_LIST)  # still connected
        assert reply.status == MessageStatus.OK


async def test_slow_client_is_dropped_and_others_get_every_event(tmp_path: Path) -> None:
    """A client that stops reading loses its connection; the rest never wait for it."""
    hypervisor = MockHypervisor()
    async with serving(tmp_path, MockBackend(hypervisor), max_queued_events=50) as (
            server, path), connected(path) as slow, connected(path) as fast:
        register = remote.ConnectDomainEventCallbackRegisterAnyArgs(0, None)
        for client in (slow, fast):
            await client.open()
            await client.call(P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, register)
        # the slow client never reads again; events flow until its socket buffer and then
        # its queue are full, and it is dropped: the backend never waits
        event = LifecycleEvent(TEST_DOMAIN, 3, 0)
        received = 0
        total = 0
        with trio.fail_after(20):
            while len(server.clients) == 2:
                for _ in range(100):
                    hypervisor.emit(event)
                total += 100
                while received < total:  # the fast client keeps up
                    packet = await fast.receive()
                    assert packet is not None and packet.proc == 318
                    received += 1
                await trio.sleep(0)
        assert received == total
        reply = await fast.call(P.CONNECT_GET_TYPE)
        assert reply.status == MessageStatus.OK
        # the slow one finds its connection closed after what was sent before
        with trio.fail_after(5):
            while (packet := await slow.receive()) is not None:
                assert packet.proc == 318
