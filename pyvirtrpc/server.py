"""A libvirt RPC server on Trio: libvirtd's daemon side, serving any :class:`Backend`.

    async with trio.open_nursery() as nursery:
        server = Server(MockBackend())
        await nursery.start(server.serve, UnixAddress("/tmp/sock"), UnixAddress("/tmp/ro", True))

Listeners are unix sockets (read-write, and read-only as libvirtd's ``-ro`` socket) and
TCP (read-write, no authentication: for tests). Each client gets a session
(:class:`pyvirtrpc.sansio.server.ServerSession`, which holds libvirtd's rules) and a
connection to the backend from its CONNECT_OPEN on.

Limits, as libvirtd has them: at most ``max_clients`` clients (further connections wait
in the listen backlog until one leaves), at most ``max_requests`` requests in flight per
client (the server stops reading that client meanwhile), keepalive from the client's
request for it (``keepalive_interval``/``keepalive_count``).

Slow clients: events are never waited for. Each client has a bounded queue of outgoing
events (``max_queued_events``); a client that lets it fill up (it stops reading while
events keep coming) is disconnected, with a warning in the log. libvirtd itself never
drops events but lets such a queue grow without bound (until keepalive closes a client
that stopped answering): disconnecting instead keeps the server's memory bounded and tells
the client, which sees its connection close (libvirt clients report that to their close
callbacks), that it lost events; the backend and the other clients never wait for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import itertools
import logging
import os
import socket as stdlib_socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from pyvirtrpc.backends.base import Backend, BackendConnection
from pyvirtrpc.errors import ErrorDomain, ErrorNumber, FramingError, RemoteError
from pyvirtrpc.events import ConnectionClosedEvent, Event
from pyvirtrpc.gen import remote
from pyvirtrpc.sansio.framing import Packet
from pyvirtrpc.sansio.keepalive import KeepaliveAction
from pyvirtrpc.sansio.server import (
    DEFAULT_KEEPALIVE_COUNT,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_MAX_QUEUED_EVENTS,
    DEFAULT_MAX_REQUESTS,
    Call,
    CloseBackend,
    Forward,
    Overflow,
    ServerSession,
    no_support,
)
from pyvirtrpc.sockio import StreamIO

__all__ = [
    "DEFAULT_MAX_CLIENTS",
    "Peer",
    "Server",
    "TcpAddress",
    "UnixAddress",
    "current_peer",
    "listen_addresses",
    "serve_unix",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_CLIENTS = 5000  # libvirtd's max_clients
_RECEIVE_SIZE = 256 * 1024
_CONNECT_OPEN = remote.PROCEDURES[remote.Procedure.CONNECT_OPEN]


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A unix socket to listen on; ``readonly`` as libvirtd's ``libvirt-sock-ro``."""

    path: str | os.PathLike[str]
    readonly: bool = False
    mode: int | None = None  # permissions; default 0o777 read-only, 0o700 read-write


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int  # 0: any free port (see Server.tcp_ports)
    readonly: bool = False


def listen_addresses(
    socket: str | os.PathLike[str] | None,
    ro_socket: str | os.PathLike[str] | None = None,
    tcp: tuple[str, int] | None = None,
) -> list[UnixAddress | TcpAddress]:
    """Where to listen, as libvirtd does: a read-write unix socket, a read-only one, and
    TCP (host, port), each if given."""
    addresses: list[UnixAddress | TcpAddress] = []
    if socket is not None:
        addresses.append(UnixAddress(socket))
    if ro_socket is not None:
        addresses.append(UnixAddress(ro_socket, readonly=True))
    if tcp is not None:
        addresses.append(TcpAddress(*tcp))
    return addresses


@dataclass(frozen=True, slots=True)
class Peer:
    """A client, as logs and audits name it (see :data:`current_peer`)."""

    ident: int  # the server's number for it, as in its log lines
    address: str  # "pid P uid U gid G" on a unix socket, "host:port" on TCP ("" unknown)


current_peer: contextvars.ContextVar[Peer] = contextvars.ContextVar("pyvirtrpc_peer")
"""The client served, in every task the server runs for it (``Backend.open``, procedures)."""


def _peer_address(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return ""
    sock = stream.socket
    try:
        if sock.family == stdlib_socket.AF_UNIX:
            creds = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED, 12)
            return "pid {} uid {} gid {}".format(*struct.unpack("3i", creds))
        host, port = sock.getpeername()[:2]
    except (OSError, AttributeError):  # no SO_PEERCRED outside Linux
        return ""
    return f"{host}:{port}"


class _Signal:
    """A flag a task can wait for; setting it wakes the waiter (one task waits)."""

    __slots__ = ("_flag", "_lot")

    def __init__(self) -> None:
        self._flag = False
        self._lot = trio.lowlevel.ParkingLot()

    def set(self) -> None:
        self._flag = True
        self._lot.unpark_all()

    async def wait(self) -> None:
        if self._flag:
            await trio.lowlevel.checkpoint()
        else:
            await self._lot.park()
        self._flag = False


class Server:
    """Serves one backend on any number of listeners; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_count: int = DEFAULT_KEEPALIVE_COUNT,
    ) -> None:
        self.backend = backend
        self.max_clients = max_clients
        self.max_requests = max_requests
        self.max_queued_events = max_queued_events
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.tcp_ports: list[int] = []
        self._client_slots = trio.Semaphore(max_clients)
        self._slot_freed = trio.lowlevel.ParkingLot()
        self._callback_ids = itertools.count()
        self._client_ids = itertools.count(1)
        self.clients: set[_Client] = set()

    def next_callback_id(self) -> int:
        return next(self._callback_ids)

    async def serve(
        self,
        *addresses: UnixAddress | TcpAddress,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``addresses`` and serve clients until cancelled.

        Unix socket files appear only once they accept connections, and are removed
        on exit. ``task_status.started()`` is called when every listener is ready.
        """
        if not addresses:
            raise ValueError("no address to listen on")
        async with contextlib.AsyncExitStack() as stack:
            listeners: list[tuple[trio.SocketListener, bool]] = []
            for address in addresses:
                if isinstance(address, UnixAddress):
                    listener = await _unix_listener(address)
                    stack.callback(_unlink, Path(address.path))
                    listeners.append((listener, address.readonly))
                else:
                    try:
                        tcp = await trio.open_tcp_listeners(address.port, host=address.host)
                    except OSError as exc:
                        where = f"{address.host}:{address.port}"
                        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}"
                                      ) from exc
                    for listener in tcp:
                        self.tcp_ports.append(listener.socket.getsockname()[1])
                        listeners.append((listener, address.readonly))
            for listener, _ in listeners:
                stack.push_async_callback(listener.aclose)
            async with trio.open_nursery() as nursery:
                for listener, readonly in listeners:
                    nursery.start_soon(self._accept_loop, listener, readonly, nursery)
                task_status.started()

    async def _accept_loop(
        self, listener: trio.SocketListener, readonly: bool, nursery: trio.Nursery
    ) -> None:
        while True:
            while self._client_slots.value == 0:  # at max_clients: leave them in the backlog
                await self._slot_freed.park()
            stream = await _accept(listener)
            nursery.start_soon(self._serve_client, stream, readonly)

    async def _serve_client(self, stream: trio.SocketStream, readonly: bool) -> None:
        try:
            # Another listener may have taken the last slot meanwhile: then wait for one.
            async with self._client_slots:
                await self.handle_stream(stream, readonly)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self._slot_freed.unpark_all()

    async def handle_stream(self, stream: trio.abc.Stream, readonly: bool = False) -> None:
        """Serve one client on ``stream`` until it leaves (closes ``stream``)."""
        client = _Client(self, stream, readonly, next(self._client_ids))
        self.clients.add(client)
        peer = current_peer.set(Peer(client.ident, _peer_address(stream)))
        try:
            await client.run()
        except* Exception:  # a bug serving one client must not stop the server
            log.exception("client %d: failed", client.ident)
        finally:
            current_peer.reset(peer)
            self.clients.discard(client)


class _Client:
    """One client: its session, its backend connection, its tasks."""

    def __init__(self, server: Server, stream: trio.abc.Stream, readonly: bool, ident: int):
        self.server = server
        self.stream = stream
        self.ident = ident
        self.session = ServerSession(
            readonly=readonly,
            programs=server.backend.programs,
            next_callback_id=server.next_callback_id,
            event_families=frozenset(),
            max_requests=server.max_requests,
            max_queued_events=server.max_queued_events,
            keepalive_interval=server.keepalive_interval,
            keepalive_count=server.keepalive_count,
        )
        self.conn: BackendConnection | None = None
        # On a socket, replies and events are written directly (non-blocking) as they are
        # made; the writer task only takes over when the kernel buffer is full.
        self._io = StreamIO(stream, self._take, _RECEIVE_SIZE)
        self._output: _Signal | None = None  # wakes the writer task, started when needed
        self._readable = _Signal()
        self._nursery: trio.Nursery | None = None
        self._keepalive_started = False

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._reader()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            with trio.CancelScope(shield=True):
                await self._close_backend()
                await self.stream.aclose()

    def close(self, reason: str) -> None:
        """Drop the client (from any task)."""
        log.info("client %d: closing: %s", self.ident, reason)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        session = self.session
        while True:
            try:
                while not session.wants_read:
                    if session.closing:
                        return  # the writer closes once the last reply is out
                    await self._readable.wait()
                    self._handle(session.resume(trio.current_time()))
                data = await self._io.receive()
                if not data:
                    return
                self._handle(session.receive_data(data, trio.current_time()))
            except FramingError as exc:
                log.info("client %d: %s", self.ident, exc)
                return

    def _handle(self, todo: list[Call | CloseBackend | Forward]) -> None:
        session = self.session
        if todo:
            for item in todo:
                if isinstance(item, Forward):
                    if self.conn is not None:
                        self.conn.forward(item)
                elif isinstance(item, CloseBackend):
                    self._close_backend_soon()
                else:
                    self._dispatch(item)
        if session.keepalive is not None and not self._keepalive_started:
            self._keepalive_started = True
            assert self._nursery is not None
            self._nursery.start_soon(self._keepalive)
        self._flush()

    def _dispatch(self, call: Call) -> None:
        assert self._nursery is not None
        if call.info is _CONNECT_OPEN:
            self._nursery.start_soon(self._open, call)
            return
        conn = self.conn
        impl = None if conn is None else conn.implementation(call.info)
        if impl is None:
            if call.procedure == remote.Procedure.CONNECT_SUPPORTS_FEATURE:
                self.session.reply(call, remote.ConnectSupportsFeatureRet(0))
            else:
                self.session.fail(call, no_support(call.info))
            return
        method, is_async = impl
        if is_async:
            self._nursery.start_soon(self._run_async, call, method)
            return
        try:
            ret = method() if call.info.args is None else method(call.args)
        except RemoteError as exc:
            self.session.fail(call, exc)
        except Exception as exc:  # a backend bug must not take the client down
            self.session.fail(call, self._backend_failure(call, exc))
        else:
            self.session.reply(call, ret)

    async def _run_async(self, call: Call, method: Any) -> None:
        try:
            ret = await (method() if call.info.args is None else method(call.args))
        except RemoteError as exc:
            self.session.fail(call, exc)
        except Exception as exc:
            self.session.fail(call, self._backend_failure(call, exc))
        else:
            self.session.reply(call, ret)
        self._flush()

    def _backend_failure(self, call: Call, exc: Exception) -> RemoteError:
        log.exception("client %d: backend failed in %s", self.ident, call.info.name)
        return RemoteError.report(
            ErrorNumber.INTERNAL_ERROR, ErrorDomain.RPC, f"{call.info.api}: {exc}"
        )

    async def _open(self, call: Call) -> None:
        try:
            conn = await self.server.backend.open(call.args.name, call.readonly, self.emit)
        except RemoteError as exc:
            self.session.open_failed(call, exc)
        else:
            self.conn = conn
            self.session.event_families = conn.event_families
            self.session.forwarding = conn.forwards
            if self.session.opened(call) is not None:
                await self._close_backend()
        self._flush()

    def _close_backend_soon(self) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._close_backend)

    async def _close_backend(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await conn.aclose()

    # ------------------------------------------------------------------ writing

    def emit(self, event: Event | Packet) -> None:
        """Relay a backend event, or a forwarding backend's packet, to this client (never
        blocks); a ConnectionClosedEvent then closes the client (see EmitEvent)."""
        try:
            if isinstance(event, Packet):
                self.session.send_packet(event)
                sent = 1
            else:
                sent = self.session.send_event(event)
        except Overflow as exc:
            log.warning("client %d: does not read its events, disconnecting: %s", self.ident, exc)
            self.close("event queue full")
            return
        if isinstance(event, ConnectionClosedEvent):
            self.session.closing = True  # read no more; close once the queue is sent
            if not (self._io.unsent or self.session.has_data_to_send):
                self._written()
                return
            sent = 1
        if sent:
            self._flush()

    def _take(self) -> bytes:
        data = self.session.data_to_send()
        if data:
            self._readable.set()  # the replies in it freed their request slots
        return data

    def _flush(self) -> None:
        """Send what the session queued: now if the socket takes it, else by the writer."""
        if not self.session.has_data_to_send:
            return
        try:
            if not self._io.write_now():
                self._wake_writer()
                return
        except OSError as exc:
            self.close(f"cannot write: {exc}")
            return
        self._written()

    def _written(self) -> None:
        """After a write: close after CONNECT_CLOSE's reply, or read again."""
        session = self.session
        if self._io.unsent or session.has_data_to_send:
            return
        if session.closing and session.in_flight == 0:
            self.close("CONNECT_CLOSE")
        else:
            self._readable.set()  # replies left: request slots may have freed

    def _wake_writer(self) -> None:
        if self._output is None:  # most clients never fill their socket buffer
            assert self._nursery is not None
            self._output = _Signal()
            self._nursery.start_soon(self._writer, self._output)
        self._output.set()

    async def _writer(self, output: _Signal) -> None:
        while True:
            await output.wait()
            await self._io.pump()
            self._written()

    async def _keepalive(self) -> None:
        session = self.session
        keepalive = session.keepalive
        assert keepalive is not None
        while True:
            await trio.sleep_until(keepalive.deadline)
            action = session.poll_keepalive(trio.current_time())
            if action is KeepaliveAction.DEAD:
                self.close("keepalive timeout")
                return
            if action is KeepaliveAction.PING:
                self._flush()


async def _unix_listener(address: UnixAddress) -> trio.SocketListener:
    """Bind under a temporary name and rename, so the path appears ready to connect."""
    path = Path(address.path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _unlink(temporary)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(str(temporary))
        mode = address.mode if address.mode is not None else (0o777 if address.readonly else 0o700)
        os.chmod(temporary, mode)
        sock.listen(stdlib_socket.SOMAXCONN)
        os.replace(temporary, path)
    except BaseException as exc:
        sock.close()
        _unlink(temporary)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot listen on {path}: {exc.strerror}") from exc
        raise
    return trio.SocketListener(sock)


async def _accept(listener: trio.SocketListener) -> trio.SocketStream:
    while True:
        try:
            return await listener.accept()
        except OSError as exc:  # out of fds: wait for a client to leave, as libvirtd does
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            log.warning("cannot accept a client: %s", exc)
            await trio.sleep(0.1)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def serve_unix(
    backend: Backend,
    socket: str | os.PathLike[str],
    ro_socket: str | os.PathLike[str] | None = None,
    *,
    tcp: tuple[str, int] | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``backend`` as libvirtd does: a read-write and a read-only unix socket (and
    TCP if given). ``options`` go to :class:`Server`; ``nursery.start`` returns it."""
    server = Server(backend, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, *listen_addresses(socket, ro_socket, tcp))
        task_status.started(server)
