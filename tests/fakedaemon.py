"""A tiny scripted libvirt daemon for tests: answers the handshake and a few calls.

Tests override ``handlers[proc]`` to misbehave on purpose. It speaks over any trio
stream (in-memory, socket pair, or a real unix socket that real libvirt clients use).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pyvirtrpc.errors import RemoteError
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.keepalive import KEEPALIVE_PROGRAM
from pyvirtrpc.gen.remote import REMOTE_PROGRAM
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.sansio.framing import FrameDecoder, Packet, encode_packet
from pyvirtrpc.sansio.keepalive import is_ping, is_pong

DOM = wire.NonnullDomain("test", uuid.UUID("6695eb01-f6a4-8304-79aa-97f2502e193f").bytes, 1)
OTHER = wire.NonnullDomain("other", uuid.uuid4().bytes, 2)

Handler = Callable[["FakeDaemon", Packet], Awaitable[None]]  # (daemon, call)


class FakeDaemon:
    """Answers the handshake and a few calls; tests override ``handlers[proc]``."""

    def __init__(self, stream: trio.abc.Stream, *, auth: list[int] | None = None,
                 features: dict[int, int] | None = None, answer_pings: bool = True) -> None:
        self.stream = stream
        self.auth = [wire.AuthType.NONE] if auth is None else auth
        self.features = {10: 1, 14: 1, 15: 1} if features is None else features
        self.answer_pings = answer_pings
        self.calls: list[Packet] = []
        self.pongs = 0
        self.next_callback_id = 0
        # by REMOTE procedure number, or by (program, procedure)
        self.handlers: dict[int | tuple[int, int], Handler] = {}
        self._send_lock = trio.Lock()

    def procs(self) -> list[int]:
        return [p.proc for p in self.calls if p.prog == REMOTE_PROGRAM]

    def args(self, proc: int) -> list[Any]:
        cls = wire.PROCEDURES[P(proc)].args
        assert cls is not None
        return [cls.decode(p.payload) for p in self.calls if p.proc == proc]

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def reply(self, call: Packet, ret: wire.xdr.XdrStruct | bytes | None = None) -> None:
        payload = ret.encode() if isinstance(ret, wire.xdr.XdrStruct) else (ret or b"")
        await self.send(encode_packet(call.prog, call.vers, call.proc, MessageType.REPLY,
                                      call.serial, MessageStatus.OK, payload))

    async def fail(self, call: Packet, error: RemoteError) -> None:
        await self.send(encode_packet(call.prog, call.vers, call.proc, MessageType.REPLY,
                                      call.serial, MessageStatus.ERROR, error.to_wire().encode()))

    async def event(self, proc: int, payload: bytes) -> None:
        await self.send(encode_packet(REMOTE_PROGRAM, 1, proc, MessageType.MESSAGE, 1,
                                      MessageStatus.OK, payload))

    async def serve(self) -> None:
        decoder = FrameDecoder()
        while True:
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            for packet in decoder.feed(data):
                if packet.prog == KEEPALIVE_PROGRAM:
                    if is_ping(packet) and self.answer_pings:
                        await self.send(encode_packet(KEEPALIVE_PROGRAM, 1, 2, 2, 0, 0, b""))
                    self.pongs += is_pong(packet)
                    continue
                self.calls.append(packet)
                handler = self.handlers.get((packet.prog, packet.proc))
                if handler is None and packet.prog == REMOTE_PROGRAM:
                    handler = self.handlers.get(packet.proc)
                if handler is None:
                    await self.default(packet)
                else:
                    await handler(self, packet)

    async def default(self, call: Packet) -> None:
        proc = call.proc
        if proc == P.AUTH_LIST:
            await self.reply(call, wire.AuthListRet(self.auth))
        elif proc == P.CONNECT_SUPPORTS_FEATURE:
            feature = wire.ConnectSupportsFeatureArgs.decode(call.payload).feature
            await self.reply(call, wire.ConnectSupportsFeatureRet(self.features.get(feature, 0)))
        elif proc == P.CONNECT_GET_URI:
            await self.reply(call, wire.ConnectGetUriRet("test:///default"))
        elif proc == P.AUTH_POLKIT:
            await self.reply(call, wire.AuthPolkitRet(1))
        elif proc in (P.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                      P.CONNECT_NETWORK_EVENT_REGISTER_ANY):
            self.next_callback_id += 1
            await self.reply(call, wire.ConnectDomainEventCallbackRegisterAnyRet(
                self.next_callback_id))
        elif proc == P.DOMAIN_GET_INFO:
            await self.reply(call, wire.DomainGetInfoRet(1, 1024, 512, 2, 99))
        elif proc == P.DOMAIN_LOOKUP_BY_NAME:
            await self.reply(call, wire.DomainLookupByNameRet(DOM))
        elif proc == P.DOMAIN_GET_BLOCK_INFO:
            await self.reply(call, wire.DomainGetBlockInfoRet(100, 1000, 1000))
        elif proc == P.CONNECT_GET_HOSTNAME:
            await self.reply(call, wire.ConnectGetHostnameRet("fake"))
        elif proc == P.CONNECT_CLOSE:
            await self.reply(call)
            await self.stream.aclose()
        else:  # void calls: open, suspend, deregistrations...
            await self.reply(call)
