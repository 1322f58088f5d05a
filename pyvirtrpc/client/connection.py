"""The Trio client: one connection to a libvirt daemon, shared by any number of tasks.

The sans-IO session (:mod:`pyvirtrpc.sansio.client`) keeps the protocol state; this
module moves its bytes. Three background tasks run per connection: a reader (replies to
their callers, events to their subscribers, pings answered), a writer (what could not be
written at once, in order), and keepalive. On plain sockets a call writes itself, and a
lone call reads its own reply, saving the task switches. A waiting call is woken with its
reply; cancelling it tells the session to drop the late reply. When the peer goes away,
every waiting call, and every call after it, raises ConnectionClosed, and every event
subscriber gets a last ConnectionClosedEvent.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, overload

import outcome
import trio

from pyvirtrpc import procedures
from pyvirtrpc.client.domain import Domain, NodeInfo
from pyvirtrpc.client.subscriptions import (
    DEFAULT_EVENT_BUFFER,
    CloseReason,
    EventStream,
    Registration,
)
from pyvirtrpc.errors import (
    ConnectionClosed,
    Error,
    ErrorDomain,
    ErrorNumber,
    NoDomainError,
    NoSupportError,
    ProtocolError,
    RemoteError,
)
from pyvirtrpc.events import (
    FAMILIES,
    LEGACY_EVENT_IDS,
    ConnectionClosedEvent,
    DomainEventID,
    Event,
    EventFamily,
    NetworkEventID,
    NodeDeviceEventID,
    SecretEventID,
    StoragePoolEventID,
    decode_event,
    family_of,
)
from pyvirtrpc.gen import qemu
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import REMOTE_PROGRAM, AuthType
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.procedures import ProcedureInfo, ProcedureKind
from pyvirtrpc.sansio.client import (
    DEFAULT_MAX_IN_FLIGHT,
    ClientSession,
    ErrorReply,
    Reply,
    ServerMessage,
    StreamPacket,
)
from pyvirtrpc.sansio.framing import Packet
from pyvirtrpc.sansio.server import api_error_domain, read_only_denied
from pyvirtrpc.sockio import StreamIO
from pyvirtrpc.transport import open_transport
from pyvirtrpc.typedparams import TypedValue, decode_params
from pyvirtrpc.uri import ParsedURI, parse_uri
from pyvirtrpc.xdr import XdrStruct

log = logging.getLogger("pyvirtrpc.client")

Done = Callable[[outcome.Outcome[bytes]], None]
"""Where the reply to a forwarded call goes (see :meth:`Connection.forward_call`)."""
_Task = trio.lowlevel.Task

R = TypeVar("R", bound=XdrStruct)

READ_SIZE = 256 * 1024
VIR_CONNECT_RO = 1


class Feature(enum.IntEnum):
    """The VIR_DRV_FEATURE_* numbers the client asks about."""

    PROGRAM_KEEPALIVE = 10
    REMOTE_EVENT_CALLBACK = 14
    REMOTE_CLOSE_CALLBACK = 15


_PROGRAMS: dict[type[enum.IntEnum], int] = {  # keepalive is the session's own business
    wire.Procedure: REMOTE_PROGRAM,
    qemu.Procedure: qemu.QEMU_PROGRAM,
}

def procedure_info(procedure: enum.IntEnum | ProcedureInfo) -> ProcedureInfo:
    """The table row of ``procedure`` (``remote.Procedure.X``, ``qemu.Procedure.Y``...)."""
    if isinstance(procedure, ProcedureInfo):
        return procedure
    program = _PROGRAMS.get(type(procedure))
    info = procedures.lookup(program, int(procedure)) if program is not None else None
    if info is None:
        raise ValueError(f"{procedure!r} is not a procedure of a program pyvirtrpc knows")
    return info


# Procedures (enum members or table rows) already found callable: the hot path's cache.
# Keyed with the enum class too: qemu.Procedure(1) == remote.Procedure(1) as ints.
_CALLABLE: dict[tuple[type, enum.IntEnum | ProcedureInfo], ProcedureInfo] = {}


def _fresh(exc: ConnectionClosed) -> ConnectionClosed:
    """A new ConnectionClosed for one raiser (one exception object per traceback)."""
    new = ConnectionClosed(*exc.args)
    new.__cause__ = exc.__cause__
    return new


class Connection:
    """An open connection; made by :func:`open_connection`, valid inside its ``async with``."""

    def __init__(self, stream: trio.abc.Stream, target: ParsedURI, *,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 event_buffer: int = DEFAULT_EVENT_BUFFER) -> None:
        self.target = target
        self.uri: str | None = target.uri
        self.readonly = target.readonly
        self.event_buffer = event_buffer
        self.server_keepalive = False
        self.server_event_callbacks = False
        self.server_close_callback = False
        self._session: ClientSession[_Task | Done] = ClientSession(max_in_flight)
        self._io = StreamIO(stream, self._session.data_to_send, READ_SIZE)
        self._writer = trio.lowlevel.ParkingLot()
        self._reader: trio.lowlevel.Task | None = None  # a caller reading the socket itself
        self._reader_free = trio.lowlevel.ParkingLot()
        self._closed: ConnectionClosed | None = None
        self._closing = False
        self._closed_event = trio.Event()
        self._closed_watchers = 0
        self._nursery: trio.Nursery | None = None
        self._registrations: dict[tuple[EventFamily, int, str | None], Registration] = {}
        self._by_callback: dict[tuple[EventFamily, int], Registration] = {}
        self._streams: set[EventStream] = set()
        self.close_reason: CloseReason | None = None  # why the connection is gone
        self._forward_messages: Callable[[int, int, bytes], None] | None = None
        self._stream_handlers: dict[int, Callable[[Packet], None]] = {}

    # ---------------------------------------------------------------- state

    @property
    def closed(self) -> bool:
        """True once the connection is gone (any later call raises ConnectionClosed)."""
        return self._closed is not None

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        self._closed_watchers += 1
        self._reader_free.unpark()  # the peer's hang-up must be read as it happens
        try:
            await self._closed_event.wait()
        finally:
            self._closed_watchers -= 1

    # ---------------------------------------------------------------- calls

    async def call(self, procedure: enum.IntEnum | ProcedureInfo,
                   args: XdrStruct | None = None) -> Any:
        """Call any procedure of the generated tables; returns its decoded ``ret`` or None.

        ``procedure`` is e.g. ``remote.Procedure.DOMAIN_GET_INFO``; ``args`` its args struct.
        """
        info = procedure_info(procedure)
        return await self._call(info, args, info.ret)

    @overload
    async def _call(self, procedure: enum.IntEnum | ProcedureInfo, args: XdrStruct | None,
                    ret: type[R]) -> R: ...

    @overload
    async def _call(self, procedure: enum.IntEnum | ProcedureInfo,
                    args: XdrStruct | None = None, ret: None = None) -> None: ...

    async def _call(self, procedure: enum.IntEnum | ProcedureInfo,
                    args: XdrStruct | None = None,
                    ret: type[XdrStruct] | None = None) -> XdrStruct | None:
        """Send one call and wait for its reply (the hot path)."""
        info = _CALLABLE.get((type(procedure), procedure))
        if info is None or (info.writes and self.readonly):
            info = await self._admit(procedure)
        if (args is None) != (info.args is None):
            raise TypeError(f"{info.name} takes {info.args.__name__ if info.args else 'no'} "
                            f"arguments, got {type(args).__name__}")
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller sends nothing
        if self._closed is not None:
            await trio.lowlevel.checkpoint()
            raise _fresh(self._closed)
        session = self._session
        prog = info.program
        serial = session.call(prog, info.version, info.number,
                              args.encode() if args is not None else b"",
                              trio.lowlevel.current_task())
        self._flush()
        if self._closed is not None:  # our own write found the peer gone (see _lose)
            raise _fresh(self._closed)

        if self._io.fd is not None and self._reader is None and session.in_flight == 1:
            # Ours is the only call on the wire: read its reply ourselves (with more
            # calls waiting, the background reader serves them all better).
            payload = await self._read_reply(prog, serial)
        else:

            def abort(_: Any) -> trio.lowlevel.Abort:
                session.abandon(prog, serial)
                return trio.lowlevel.Abort.SUCCEEDED

            payload = await trio.lowlevel.wait_task_rescheduled(abort)
        if ret is not None:
            return ret.decode(payload)
        if payload:
            raise ProtocolError(f"{info.name} returns nothing, got {len(payload)} bytes")
        return None

    async def _admit(self, procedure: enum.IntEnum | ProcedureInfo) -> ProcedureInfo:
        """The checks behind the fast path: what the client calls, and read-only access."""
        info = procedure_info(procedure)
        if info.kind is not ProcedureKind.CALL or info.fds:
            await trio.lowlevel.checkpoint()
            what = "an event" if info.kind is ProcedureKind.EVENT else (
                "a stream procedure" if info.kind is ProcedureKind.STREAM
                else "a procedure passing file descriptors")
            raise RemoteError.report(
                ErrorNumber.NO_SUPPORT, api_error_domain(info.api),
                f"{info.api} ({info.name} is {what}, which pyvirtrpc's client does not call)",
            )
        if info.writes and self.readonly:
            await trio.lowlevel.checkpoint()
            raise read_only_denied(info.api)
        _CALLABLE[type(procedure), procedure] = info
        return info

    # ------------------------------------------------------- background I/O
    #
    # On a plain socket (unix, tcp) bytes are written straight from the task that queued
    # them, with one non-blocking write: it cannot be cancelled half-way, and it saves a
    # task switch per call. Whatever does not fit, and everything on other streams (TLS,
    # ssh), goes through the writer task. Likewise a caller reads its own reply from the
    # socket when no other caller is reading; otherwise the reader wakes it with it.

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """The background tasks, in a nursery of their own that ``_lose`` cancels."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read_loop)
            nursery.start_soon(self._write_loop)
            task_status.started()

    def _flush(self) -> None:
        """Send what the session queued: directly if possible, else by the writer task."""
        try:
            if not self._io.write_now():
                self._writer.unpark()
        except OSError as exc:
            self._lose(f"connection to the daemon lost: {exc}", CloseReason.ERROR, exc)

    async def _write_loop(self) -> None:
        io = self._io
        try:
            while True:
                await io.pump()
                await self._writer.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._lose(f"connection to the daemon lost: {exc}", CloseReason.ERROR, exc)

    def _process(self, data: bytes | bytearray, me: trio.lowlevel.Task | None
                 ) -> Reply[_Task | Done] | ErrorReply[_Task | Done] | None:
        """Act on bytes read: wake callers, fan out events, answer pings.

        Returns the reply for ``me`` (a caller reading for itself) if it was among them.
        """
        if not data:
            if self._closing:
                self._lose("connection closed", CloseReason.CLIENT)
            else:
                self._lose("the daemon closed the connection", CloseReason.EOF)
            return None
        try:
            events = self._session.receive_data(data, trio.current_time())
        except ProtocolError as exc:
            self._lose(f"protocol error from the daemon: {exc}", CloseReason.ERROR, exc)
            return None
        mine: Reply[_Task | Done] | ErrorReply[_Task | Done] | None = None
        for event in events:
            if type(event) is Reply:
                token = event.token
                if token is me:
                    mine = event
                elif type(token) is _Task:
                    trio.lowlevel.reschedule(token, outcome.Value(event.payload))
                else:
                    token(outcome.Value(event.payload))
            elif type(event) is ErrorReply:
                token = event.token
                if token is me:
                    mine = event
                elif type(token) is _Task:
                    trio.lowlevel.reschedule(token, outcome.Error(event.error))
                else:
                    token(outcome.Error(event.error))
            elif type(event) is ServerMessage:
                self._on_message(event.prog, event.proc, event.payload)
            elif type(event) is StreamPacket:
                handler = self._stream_handlers.get(event.packet.serial)
                if handler is not None:
                    handler(event.packet)
        self._flush()
        return mine

    async def _read_reply(self, prog: int, serial: int) -> bytes:
        """Wait for our own reply by reading the socket ourselves (no task switch).

        The reader's role: one task at a time reads, here a caller; the others are woken
        with their replies. The background reader steps in whenever no caller reads.
        """
        fd = self._io.fd
        assert fd is not None
        # Not StreamIO.receive: a coroutine frame less per call (about 2% of the CPU time
        # of a sequential call, measured with tools/bench_client.py's calls).
        me = self._reader = trio.lowlevel.current_task()
        try:
            while True:
                try:
                    await trio.lowlevel.wait_readable(fd)
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except trio.ClosedResourceError:  # _lose woke us
                    assert self._closed is not None
                    raise _fresh(self._closed) from None
                except OSError as exc:
                    self._lose(f"connection to the daemon lost: {exc}", CloseReason.ERROR, exc)
                except BaseException:
                    self._session.abandon(prog, serial)
                    raise
                else:
                    mine = self._process(data, me)
                    if type(mine) is Reply:
                        return mine.payload
                    if type(mine) is ErrorReply:
                        raise mine.error
                if self._closed is not None:
                    raise _fresh(self._closed)
        finally:
            self._reader = None
            if self._needs_reader():
                self._reader_free.unpark()

    def _needs_reader(self) -> bool:
        """Must the background reader read now that no caller does?

        Yes while replies are due or events subscribed to, or without our own keepalive
        timer. Otherwise it may sleep (sparing a task switch per call) until the next
        keepalive tick, which wakes it to read the daemon's pings.
        """
        session = self._session
        return bool(session.in_flight or self._streams or session.keepalive is None
                    or self._forward_messages is not None)

    async def _read_loop(self) -> None:
        """The background reader: events and pings while idle, replies of waiting callers."""
        fd = self._io.fd
        if fd is None:
            while self._closed is None:
                try:
                    data = await self._io.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._lose(f"connection to the daemon lost: {exc}", CloseReason.ERROR, exc)
                    return
                self._process(data, None)
            return
        # A second descriptor for the same socket, so that waiting here never stops a
        # caller from waiting on the first; whoever runs first reads, if it may.
        idle_fd = os.dup(fd)
        try:
            while self._closed is None:
                if self._reader is not None:
                    await self._reader_free.park()
                    continue
                await trio.lowlevel.wait_readable(idle_fd)
                if self._reader is not None:
                    continue
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._lose(f"connection to the daemon lost: {exc}", CloseReason.ERROR, exc)
                    return
                self._process(data, None)
        finally:
            trio.lowlevel.notify_closing(idle_fd)
            os.close(idle_fd)

    async def _keepalive_loop(self) -> None:
        session = self._session
        keepalive = session.keepalive
        assert keepalive is not None
        while True:
            await trio.sleep_until(keepalive.deadline)
            if self._reader is None:
                self._reader_free.unpark()  # read what came while nobody needed to
            if session.poll_keepalive(trio.current_time()):
                self._lose(
                    f"no answer to keepalive for {keepalive.interval * (keepalive.count + 1):g} s",
                    CloseReason.KEEPALIVE,
                )
                return
            self._flush()

    def _lose(self, message: str, reason: CloseReason, cause: BaseException | None = None) -> None:
        """The connection is gone: fail every waiter, end every subscription, stop I/O."""
        if self._closed is not None:
            return
        closed = ConnectionClosed(message)
        closed.__cause__ = cause
        self._closed = closed
        self.close_reason = reason
        waiting = self._session.close(closed)
        # Wake the callers blocked on their replies, each exactly once: not one reading for
        # itself (notify_closing wakes it), nor the one running now, whose own write failed
        # (it is not blocked: _call raises). Rescheduling a task that is not blocked
        # corrupts Trio's run queue.
        running = trio.lowlevel.current_task()
        for task in waiting:
            if type(task) is _Task and task is not self._reader and task is not running:
                trio.lowlevel.reschedule(task, outcome.Error(_fresh(closed)))
        if self._reader is not None and self._io.fd is not None:
            trio.lowlevel.notify_closing(self._io.fd)  # the reading caller wakes and raises
        final = ConnectionClosedEvent(reason)
        for stream in list(self._streams):
            stream.end(final)
        for registration in list(self._registrations.values()):
            registration.registered.set()
        self._closed_event.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        # Forwarded calls last: their callbacks run code of their own (a relay answers its
        # clients, and may cancel the scope of a caller woken above, or fail), on a
        # connection already closed in every other respect.
        for done in waiting:
            if type(done) is not _Task:
                done(outcome.Error(_fresh(closed)))  # type: ignore[operator]

    # ------------------------------------------------------------- events

    def _on_message(self, prog: int, proc: int, payload: bytes) -> None:
        if self._forward_messages is not None:
            self._forward_messages(prog, proc, payload)
            return
        if prog != REMOTE_PROGRAM:
            return  # QEMU monitor events: nobody can subscribe to them here
        try:
            callback_id, event = decode_event(proc, payload)
        except ProtocolError as exc:
            log.warning("dropped an event the daemon sent (procedure %d): %s", proc, exc)
            return
        if isinstance(event, ConnectionClosedEvent):
            for stream in list(self._streams):
                stream.push(event)
            return
        info = family_of(event)
        assert info is not None  # decode_event makes only events of a family, or the above
        family = info.family
        if callback_id is not None:
            registration = self._by_callback.get((family, callback_id))
            targets = registration.subscribers if registration is not None else ()
        else:  # legacy form: every registration of that ID, filtered locally
            event_id = type(event).event_id  # type: ignore[attr-defined]
            targets = {s for r in self._registrations.values()
                       if r.legacy and r.family is family and r.event_id == event_id
                       for s in r.subscribers}
        for stream in targets:
            stream.push(event)

    @asynccontextmanager
    async def domain_events(
        self, *event_ids: DomainEventID | int, domain: Domain | None = None,
        buffer: int | None = None,
    ) -> AsyncIterator[EventStream]:
        """Subscribe to domain events (all of them without IDs); ``domain`` filters.

        Registers with the server once per (event ID, domain) however many subscribers
        share it, and deregisters when the last one leaves. Servers without callback IDs
        (feature 14) are registered the legacy way and filtered here.
        """
        ref = domain.ref if domain is not None else None
        uuid_filter = ref.uuid if ref is not None else None

        def same_domain(event: Event) -> bool:
            return getattr(event, "domain", None) is None or event.domain.uuid == uuid_filter  # type: ignore[attr-defined]

        accept = same_domain if uuid_filter is not None and not self.server_event_callbacks \
            else None
        async with self._subscription(EventFamily.DOMAIN, event_ids, ref, buffer,
                                      accept) as stream:
            yield stream

    def network_events(self, *event_ids: NetworkEventID | int,
                       network: wire.NonnullNetwork | None = None, buffer: int | None = None,
                       ) -> AbstractAsyncContextManager[EventStream]:
        """Subscribe to network events (all without IDs), of ``network`` or all networks."""
        return self._subscription(EventFamily.NETWORK, event_ids, network, buffer)

    def storage_pool_events(self, *event_ids: StoragePoolEventID | int,
                            pool: wire.NonnullStoragePool | None = None,
                            buffer: int | None = None) -> AbstractAsyncContextManager[EventStream]:
        """Subscribe to storage pool events, of ``pool`` or all pools."""
        return self._subscription(EventFamily.STORAGE_POOL, event_ids, pool, buffer)

    def node_device_events(self, *event_ids: NodeDeviceEventID | int,
                           device: wire.NonnullNodeDevice | None = None,
                           buffer: int | None = None) -> AbstractAsyncContextManager[EventStream]:
        """Subscribe to node device events, of ``device`` or all devices."""
        return self._subscription(EventFamily.NODE_DEVICE, event_ids, device, buffer)

    def secret_events(self, *event_ids: SecretEventID | int,
                      secret: wire.NonnullSecret | None = None, buffer: int | None = None,
                      ) -> AbstractAsyncContextManager[EventStream]:
        """Subscribe to secret events, of ``secret`` or all secrets."""
        return self._subscription(EventFamily.SECRET, event_ids, secret, buffer)

    @asynccontextmanager
    async def _subscription(self, family: EventFamily, event_ids: tuple[int, ...], target: Any,
                            buffer: int | None,
                            accept: Any = None) -> AsyncIterator[EventStream]:
        """Subscribe to ``event_ids`` (all the family's without any) of ``target`` (an
        object of the family, or None for all of them)."""
        info = FAMILIES[family]
        ids = [info.ids(i) for i in event_ids] or list(info.ids)
        filter_key = info.key(target)
        stream = EventStream(buffer or self.event_buffer, accept)
        if self._closed is not None:
            await trio.lowlevel.checkpoint()
            raise _fresh(self._closed)
        joined: list[Registration] = []
        self._streams.add(stream)
        self._reader_free.unpark()  # events must now be read even while no call waits
        try:
            for event_id in ids:
                joined.append(await self._join(family, int(event_id), target, filter_key,
                                               stream))
            yield stream
        finally:
            self._streams.discard(stream)
            stream.end()
            for registration in joined:
                registration.leave(stream)
            for registration in joined:
                if registration.leaving and self._closed is None:
                    await registration.gone.wait()

    async def _join(self, family: EventFamily, event_id: int, target: Any,
                    filter_key: str | None,
                    stream: EventStream) -> Registration:
        legacy = family is EventFamily.DOMAIN and not self.server_event_callbacks
        if legacy:
            if event_id not in LEGACY_EVENT_IDS:
                await trio.lowlevel.checkpoint()
                raise RemoteError.report(
                    ErrorNumber.NO_SUPPORT, ErrorDomain.DOMAIN,
                    f"event ID {event_id} needs a server with callback IDs (feature 14)",
                )
            filter_key, target = None, None  # one legacy registration serves all domains
        key = (family, event_id, filter_key)
        registration = self._registrations.get(key)
        while registration is not None and registration.leaving:
            await registration.gone.wait()
            registration = self._registrations.get(key)
        if registration is None:
            registration = Registration(family, event_id, filter_key, legacy=legacy)
            self._registrations[key] = registration
            assert self._nursery is not None
            self._nursery.start_soon(self._maintain, registration, target)
        registration.subscribers.add(stream)
        try:
            await registration.registered.wait()
        except BaseException:
            registration.leave(stream)
            raise
        if registration.error is not None:
            registration.leave(stream)
            raise registration.error
        if self._closed is not None:
            registration.leave(stream)
            raise _fresh(self._closed)
        return registration

    async def _maintain(self, registration: Registration, target: Any) -> None:
        """Register with the server, wait for the last subscriber to go, deregister.

        Runs in the connection's nursery, so that a subscriber cancelled mid-call can never
        leave the server's registrations and ours out of step.
        """
        family, event_id = registration.family, registration.event_id
        info = FAMILIES[family]
        try:
            try:
                if registration.legacy:
                    await self._call(P.CONNECT_DOMAIN_EVENT_REGISTER_ANY,
                                     wire.ConnectDomainEventRegisterAnyArgs(event_id))
                else:
                    ret = await self.call(info.register, info.register_args(event_id, target))
                    registration.callback_id = ret.callbackID
                    self._by_callback[family, ret.callbackID] = registration
            except Error as exc:
                registration.error = exc
                return
            finally:
                registration.registered.set()
            await registration.idle.wait()
            try:
                if registration.legacy:
                    await self._call(P.CONNECT_DOMAIN_EVENT_DEREGISTER_ANY,
                                     wire.ConnectDomainEventDeregisterAnyArgs(event_id))
                else:
                    await self.call(info.deregister,
                                    info.deregister_args(registration.callback_id))
            except Error as exc:
                log.debug("event deregistration failed: %s", exc)
        finally:
            if registration.callback_id is not None:
                self._by_callback.pop((family, registration.callback_id), None)
            if self._registrations.get(registration.key) is registration:
                del self._registrations[registration.key]
            registration.gone.set()

    # ---------------------------------------------- forwarding (the relay backend)
    #
    # A relay passes calls, replies, events and stream packets through undecoded and in
    # the order they come: a reply goes to a callback, called by whoever reads it.

    def forward_messages(self, handler: Callable[[int, int, bytes], None]) -> None:
        """Hand every MESSAGE from the daemon but keepalive's, undecoded (prog, proc,
        payload), to ``handler`` instead of the event subscriptions."""
        self._forward_messages = handler
        self._reader_free.unpark()  # from now on someone always reads

    def forward_call(self, prog: int, vers: int, proc: int, payload: bytes, done: Done,
                     stream: Callable[[Packet], None] | None = None) -> int:
        """Send a call undecoded, now (never blocks); returns its serial.

        ``done`` gets the reply payload, or its error (a RemoteError, ConnectionClosed
        if the connection goes first...). With ``stream``, the call opens a stream whose
        packets from the daemon go to ``stream`` until :meth:`close_stream`.
        """
        if self._closed is not None:
            raise _fresh(self._closed)
        serial = self._session.call(prog, vers, proc, payload, done)
        if stream is not None:
            self._session.open_stream(serial)
            self._stream_handlers[serial] = stream
        self._flush()
        if self._reader is None:
            self._reader_free.unpark()
        return serial

    def send_stream(self, packet: Packet) -> None:
        """Send a STREAM or STREAM_HOLE packet of a stream :meth:`forward_call` opened."""
        if self._closed is None:
            self._session.send_packet(packet.to_bytes())
            self._flush()

    def close_stream(self, serial: int) -> None:
        self._session.close_stream(serial)
        self._stream_handlers.pop(serial, None)

    # ---------------------------------------------------------- open/close

    async def _open(self, keepalive: tuple[float, int] | None) -> None:
        """The handshake of libvirt's remote driver, step for step."""
        target = self.target
        await self._authenticate(target.options.get("auth"))
        self.server_keepalive = await self.supports_feature(Feature.PROGRAM_KEEPALIVE)
        await self._call(P.CONNECT_OPEN, wire.ConnectOpenArgs(
            target.name, VIR_CONNECT_RO if target.readonly else 0))
        if target.uri is None:
            self.uri = (await self._call(P.CONNECT_GET_URI, None, wire.ConnectGetUriRet)).uri
        self.server_event_callbacks = await self.supports_feature(Feature.REMOTE_EVENT_CALLBACK)
        self.server_close_callback = await self.supports_feature(Feature.REMOTE_CLOSE_CALLBACK)
        if keepalive is not None and self.server_keepalive:
            interval, count = keepalive
            self._session.start_keepalive(interval, count, trio.current_time())
            assert self._nursery is not None
            self._nursery.start_soon(self._keepalive_loop)

    async def _authenticate(self, wanted: str | None) -> None:
        try:
            offered = (await self._call(P.AUTH_LIST, None, wire.AuthListRet)).types
        except NoSupportError:
            return  # a server older than authentication
        if not offered:
            return
        if wanted is not None:
            lowered = wanted.lower()
            if lowered == "sasl" or lowered.startswith("sasl."):
                want = AuthType.SASL
            elif lowered == "polkit":
                want = AuthType.POLKIT
            else:
                raise _auth_error(f"unknown authentication type {wanted}")
            if want not in offered:
                raise _auth_error(f"requested authentication type {wanted} rejected")
            method = want
        else:
            method = offered[0]
        if method == AuthType.POLKIT:
            await self._call(P.AUTH_POLKIT, None, wire.AuthPolkitRet)
        elif method == AuthType.SASL:
            raise _auth_error(
                "the server requires SASL authentication, which pyvirtrpc does not support "
                "(configure auth_unix_rw/auth_tcp = \"none\" or \"polkit\", or use TLS "
                "client certificates with auth_tls = \"none\")"
            )
        elif method != AuthType.NONE:
            raise _auth_error(f"unsupported authentication type {int(method)}")

    async def _shutdown(self) -> None:
        """CONNECT_CLOSE, as libvirt's virConnectClose does, unless the peer is gone."""
        if self._closed is not None:
            return
        self._closing = True
        # Cancelled: no goodbye; the stream is closed just after, and trio raises the
        # (level-triggered) cancellation again at the caller's next checkpoint.
        with contextlib.suppress(Error, trio.Cancelled):
            await self._call(P.CONNECT_CLOSE)

    # -------------------------------------------------------------- facade

    async def supports_feature(self, feature: int) -> bool:
        """virConnectSupportsFeature (errors count as "no", as in libvirt's client)."""
        try:
            r = await self._call(P.CONNECT_SUPPORTS_FEATURE,
                                 wire.ConnectSupportsFeatureArgs(feature),
                                 wire.ConnectSupportsFeatureRet)
        except RemoteError:
            return False
        return bool(r.supported)

    async def get_hostname(self) -> str:
        return (await self._call(P.CONNECT_GET_HOSTNAME, None, wire.ConnectGetHostnameRet)).hostname

    async def get_type(self) -> str:
        return (await self._call(P.CONNECT_GET_TYPE, None, wire.ConnectGetTypeRet)).type

    async def get_version(self) -> int:
        """The hypervisor's version, major * 1,000,000 + minor * 1,000 + release."""
        return (await self._call(P.CONNECT_GET_VERSION, None, wire.ConnectGetVersionRet)).hv_ver

    async def get_lib_version(self) -> int:
        """The daemon's libvirt version, encoded like :meth:`get_version`."""
        r = await self._call(P.CONNECT_GET_LIB_VERSION, None, wire.ConnectGetLibVersionRet)
        return r.lib_ver

    async def get_capabilities(self) -> str:
        r = await self._call(P.CONNECT_GET_CAPABILITIES, None, wire.ConnectGetCapabilitiesRet)
        return r.capabilities

    async def get_node_info(self) -> NodeInfo:
        r = await self._call(P.NODE_GET_INFO, None, wire.NodeGetInfoRet)
        model = "".join(map(chr, r.model)).split("\0", 1)[0]
        return NodeInfo(model, r.memory, r.cpus, r.mhz, r.nodes, r.sockets, r.cores, r.threads)

    async def list_domains(self, flags: int = 0) -> list[Domain]:
        """virConnectListAllDomains (``flags`` = VIR_CONNECT_LIST_DOMAINS_*; 0 = all)."""
        r = await self._call(P.CONNECT_LIST_ALL_DOMAINS,
                             wire.ConnectListAllDomainsArgs(1, flags),
                             wire.ConnectListAllDomainsRet)
        return [Domain(self, ref) for ref in r.domains]

    async def lookup_domain(self, key: str | uuid.UUID | int) -> Domain:
        """A domain by name, UUID (as text or uuid.UUID) or id, as virsh looks them up."""
        if isinstance(key, int):
            r = await self._call(P.DOMAIN_LOOKUP_BY_ID, wire.DomainLookupByIdArgs(key),
                                 wire.DomainLookupByIdRet)
            return Domain(self, r.dom)
        if isinstance(key, str):
            try:
                as_uuid = uuid.UUID(key)
            except ValueError:
                return await self._lookup_by_name(key)
            try:
                return await self.lookup_domain(as_uuid)
            except NoDomainError:
                return await self._lookup_by_name(key)
        r2 = await self._call(P.DOMAIN_LOOKUP_BY_UUID, wire.DomainLookupByUuidArgs(key.bytes),
                              wire.DomainLookupByUuidRet)
        return Domain(self, r2.dom)

    async def _lookup_by_name(self, name: str) -> Domain:
        r = await self._call(P.DOMAIN_LOOKUP_BY_NAME, wire.DomainLookupByNameArgs(name),
                             wire.DomainLookupByNameRet)
        return Domain(self, r.dom)

    async def define_domain(self, xml: str, flags: int = 0) -> Domain:
        """virDomainDefineXML(Flags): a persistent domain from XML."""
        if flags:
            r = await self._call(P.DOMAIN_DEFINE_XML_FLAGS,
                                 wire.DomainDefineXmlFlagsArgs(xml, flags),
                                 wire.DomainDefineXmlFlagsRet)
            return Domain(self, r.dom)
        r2 = await self._call(P.DOMAIN_DEFINE_XML, wire.DomainDefineXmlArgs(xml),
                              wire.DomainDefineXmlRet)
        return Domain(self, r2.dom)

    async def create_domain(self, xml: str, flags: int = 0) -> Domain:
        """virDomainCreateXML: start a transient domain."""
        r = await self._call(P.DOMAIN_CREATE_XML, wire.DomainCreateXmlArgs(xml, flags),
                             wire.DomainCreateXmlRet)
        return Domain(self, r.dom)

    async def get_all_domain_stats(
        self, stats: int = 0, flags: int = 0, domains: list[Domain] | None = None,
    ) -> dict[str, dict[str, TypedValue]]:
        """``{domain name: {"state.state": 1, "block.0.allocation": ..., ...}}``.

        ``stats`` is a VIR_DOMAIN_STATS_* mask (0 = all the driver has), ``flags``
        VIR_CONNECT_GET_ALL_DOMAINS_STATS_*; ``domains`` limits the answer to those
        (virDomainListGetStats).
        """
        refs = [d.ref for d in domains] if domains else []
        r = await self._call(P.CONNECT_GET_ALL_DOMAIN_STATS,
                             wire.ConnectGetAllDomainStatsArgs(refs, stats, flags),
                             wire.ConnectGetAllDomainStatsRet)
        return {record.dom.name: decode_params(record.params) for record in r.retStats}


def _auth_error(detail: str) -> RemoteError:
    return RemoteError.report(ErrorNumber.AUTH_FAILED, ErrorDomain.REMOTE, detail)


@asynccontextmanager
async def open_connection(
    uri: str | None,
    *,
    readonly: bool = False,
    keepalive: tuple[float, int] | None = (5, 6),
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
) -> AsyncIterator[Connection]:
    """Connect to the libvirt daemon ``uri`` names, and close the connection on exit.

    ``uri`` None lets the daemon on the default socket choose (CONNECT_GET_URI then
    tells which). ``keepalive=(interval, count)``: ping a silent daemon after
    ``interval`` seconds and give up after ``count`` unanswered pings (None: only answer
    the daemon's pings). ``max_in_flight``: calls on the wire at once (the daemon's
    max_client_requests); more wait their turn. ``event_buffer``: events each subscriber
    may leave unread before it is told of losses.
    """
    target = parse_uri(uri, readonly=readonly)
    stream = await open_transport(target)
    async with open_connection_stream(stream, target, keepalive=keepalive,
                                      max_in_flight=max_in_flight,
                                      event_buffer=event_buffer) as conn:
        yield conn


@asynccontextmanager
async def open_connection_stream(
    stream: trio.abc.Stream,
    target: ParsedURI | str | None,
    *,
    keepalive: tuple[float, int] | None = (5, 6),
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
) -> AsyncIterator[Connection]:
    """Like :func:`open_connection`, over a stream the caller connected (and we close)."""
    if not isinstance(target, ParsedURI):
        target = parse_uri(target)
    conn = Connection(stream, target, max_in_flight=max_in_flight, event_buffer=event_buffer)
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(conn._run)
            try:
                await conn._open(keepalive)
            except BaseException as exc:  # libvirt sends no CONNECT_CLOSE after a failed open
                failure = exc
            else:
                try:
                    yield conn
                except BaseException as exc:  # re-raised below, outside the nursery (no group)
                    failure = exc
                await conn._shutdown()
            conn._lose("connection closed", CloseReason.CLIENT)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)
        conn._lose("connection closed", CloseReason.CLIENT)
    if failure is not None:
        raise failure
