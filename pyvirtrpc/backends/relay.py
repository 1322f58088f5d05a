"""The relay: pyvirtrpc's server in front of a real libvirtd.

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            serve_relay, "qemu:///system", "/run/relay-sock", "/run/relay-sock-ro",
            read_only=False, deny=["DOMAIN_DESTROY"], audit="/var/log/relay.jsonl"))

A read-only front, an audited front, one socket for many tools. Each client gets its own
upstream connection (pyvirtrpc's client), opened when the client sends CONNECT_OPEN, with
the name the client sent (or, when the relay is ``pinned``, the upstream URI's own), and
read-only when the client's connection is (read-only socket, VIR_CONNECT_RO) or the relay
is. Before CONNECT_OPEN our server answers the handshake (AUTH_LIST, features, keepalive)
as libvirtd does.

From then on every call is forwarded by its header, whether pyvirtrpc knows the procedure
or not: the payload goes upstream as it came, under a serial of the upstream connection,
and the reply or error comes back as the upstream sent it, under the client's serial.
Everything the upstream sends is passed on in the order it came, so a reply is never
overtaken by the events or stream data that followed it.

- Events: registrations are calls like any other, so the callback IDs a client holds are
  its upstream connection's, and the upstream's event MESSAGEs (any program, any
  procedure) are passed on unchanged.
- Close callbacks (CONNECT_REGISTER/UNREGISTER_CLOSE_CALLBACK) are the relay's own: when
  the upstream connection goes away, the client gets CONNECT_EVENT_CONNECTION_CLOSED with
  the reason (end of file, keepalive, error) if it registered one, as libvirtd sends it,
  and is then disconnected. When the client goes away, its upstream connection is closed.
- Streams (screenshot, console, channel, volume upload/download, tunnelled migration):
  STREAM and STREAM_HOLE packets are forwarded both ways by serial until the upstream
  ends the stream. File descriptors are not: CALL_WITH_FDS is refused.
- Keepalive runs on each hop on its own.

Policy (:class:`Policy`): read-only (only procedures pyvirtrpc knows not to write pass;
the others, unknown ones included, get libvirt's read-only refusal, and the upstream
connection is opened read-only too), an allow list and a deny list of procedures. The
audit log (:class:`AuditLog`) has one JSON line per call the relay forwards or refuses,
CONNECT_OPEN included.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import time
from collections.abc import Iterable
from typing import IO, Any

import outcome
import trio

from pyvirtrpc.backends.base import BackendConnection, EmitEvent, implements
from pyvirtrpc.client.connection import Connection, open_connection_stream
from pyvirtrpc.client.subscriptions import CloseReason
from pyvirtrpc.errors import ConnectionClosed, Error, ErrorDomain, ErrorNumber, RemoteError
from pyvirtrpc.events import ConnectionClosedEvent
from pyvirtrpc.gen import qemu, remote
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.procedures import ProcedureInfo, ProcedureKind
from pyvirtrpc.sansio.framing import Packet
from pyvirtrpc.sansio.server import Forward, read_only_denied
from pyvirtrpc.server import Peer, Server, current_peer, listen_addresses
from pyvirtrpc.transport import open_transport
from pyvirtrpc.uri import ParsedURI, Transport, parse_uri
from pyvirtrpc.xdr import XdrError, XdrStruct

__all__ = [
    "PROGRAMS",
    "AuditLog",
    "Policy",
    "RelayBackend",
    "RelayConnection",
    "procedure_key",
    "serve_relay",
]

log = logging.getLogger(__name__)

LXC_PROGRAM = 0x00068000  # libvirt's LXC program: forwarded, never decoded
PROGRAMS = frozenset({remote.REMOTE_PROGRAM, qemu.QEMU_PROGRAM, LXC_PROGRAM})
_PROGRAM_NAMES = {remote.REMOTE_PROGRAM: "remote", qemu.QEMU_PROGRAM: "qemu", LXC_PROGRAM: "lxc"}
_CLOSE_TIMEOUT = 5.0  # for the upstream's answer to CONNECT_CLOSE
_STREAM_TYPES = (MessageType.STREAM, MessageType.STREAM_HOLE)
_LOOKUP_BY_NAME = remote.PROCEDURES[remote.Procedure.DOMAIN_LOOKUP_BY_NAME]


# ---------------------------------------------------------------------------- policy


def procedure_key(spec: str | int) -> tuple[int, int]:
    """(program, procedure) of a procedure named as a user would name it.

    ``DOMAIN_SET_BLOCK_THRESHOLD`` (a remote procedure, else a qemu one), libvirt's
    ``REMOTE_PROC_...`` or ``QEMU_PROC_...``, a remote procedure's number, or
    ``qemu:N`` / ``lxc:N`` (any case). Raises ValueError for a name pyvirtrpc does not know.
    """
    if isinstance(spec, int):
        return remote.REMOTE_PROGRAM, spec
    text = spec.strip()
    program, sep, number = text.partition(":")
    if sep:
        programs = {name: prog for prog, name in _PROGRAM_NAMES.items()}
        prog = programs.get(program.lower())
        if prog is None or not number.isdigit():
            raise ValueError(f"not a procedure: {spec!r} (expected remote:N, qemu:N or lxc:N)")
        return prog, int(number)
    if text.isdigit():
        return remote.REMOTE_PROGRAM, int(text)
    name = text.upper()
    tables = [(remote, "REMOTE_PROC_"), (qemu, "QEMU_PROC_")]
    for module, prefix in tables:
        if name.startswith(prefix):
            tables = [(module, prefix)]
            name = name.removeprefix(prefix)
    for module, _ in tables:
        member = module.Procedure.__members__.get(name)
        if member is not None:
            return module.PROCEDURES[member].program, int(member)
    raise ValueError(f"unknown procedure: {spec!r}")


def _describe(prog: int, proc: int, info: ProcedureInfo | None) -> str:
    """A procedure as the audit log and refusals name it."""
    if info is not None:
        return info.name if prog == remote.REMOTE_PROGRAM else f"{_PROGRAM_NAMES[prog]}:{info.name}"
    return f"{_PROGRAM_NAMES.get(prog, hex(prog))}:{proc}"


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """What the relay lets through (by default, everything).

    ``allow``: only these (program, procedure) pairs pass (None: any); ``deny``: these
    never pass; ``read_only``: only procedures pyvirtrpc knows not to write pass.
    """

    read_only: bool = False
    allow: frozenset[tuple[int, int]] | None = None
    deny: frozenset[tuple[int, int]] = frozenset()

    @classmethod
    def build(cls, *, read_only: bool = False, allow: Iterable[str | int] | None = None,
              deny: Iterable[str | int] = ()) -> Policy:
        """A policy from procedures named as :func:`procedure_key` reads them."""
        allowed = None if allow is None else frozenset(map(procedure_key, allow))
        return cls(read_only, allowed, frozenset(map(procedure_key, deny)))

    def refusal(self, prog: int, proc: int, info: ProcedureInfo | None) -> RemoteError | None:
        """The error for a call the policy refuses, or None."""
        if (prog, proc) in self.deny or (self.allow is not None and (prog, proc) not in self.allow):
            api = info.api if info is not None else _describe(prog, proc, info)
            return RemoteError.report(ErrorNumber.ACCESS_DENIED, ErrorDomain.ACCESS,
                                      f"the relay's policy does not allow {api}")
        if self.read_only and (info is None or info.writes):
            return read_only_denied(info.api if info is not None else _describe(prog, proc, info))
        return None


# ----------------------------------------------------------------------------- audit


class AuditLog:
    """One JSON object per line and per call: ``time`` (UTC, when the call came),
    ``client`` (the server's number for it) and ``peer`` (pid/uid, or address),
    ``procedure`` (``DOMAIN_GET_INFO``, ``qemu:DOMAIN_MONITOR_COMMAND``, ``remote:9999``),
    ``domain`` (the domain's name when the call names one, else null), ``result`` ("ok"
    or libvirt's error code), ``error`` (the message, on errors) and ``latency_ms``."""

    def __init__(self, file: IO[str]) -> None:
        self.file = file

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> AuditLog:
        """Append to the file at ``path`` (made if missing)."""
        return cls(open(path, "a", encoding="utf-8"))  # closed by close()

    def close(self) -> None:
        self.file.close()

    def record(self, when: float, peer: Peer | None, procedure: str, domain: str | None,
               result: outcome.Outcome[Any], latency: float) -> None:
        """Write one line (``when``: a time.time(); ``latency``: seconds)."""
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(when, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "client": peer.ident if peer is not None else None,
            "peer": peer.address if peer is not None else None,
            "procedure": procedure,
            "domain": domain,
            "result": "ok",
        }
        if isinstance(result, outcome.Error):
            error = result.error
            line["result"] = int(error.code) if isinstance(error, RemoteError) else None
            line["error"] = str(error)
        line["latency_ms"] = round(latency * 1000, 3)
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()


def _names_domain(struct_type: type[XdrStruct] | None) -> bool:
    return struct_type is not None and "dom" in struct_type.__dataclass_fields__  # type: ignore[attr-defined]


def _domain_name(info: ProcedureInfo | None, payload: bytes, reply: outcome.Outcome[Any]
                 ) -> str | None:
    """The domain a call is about, from its arguments, else from its reply (lookups)."""
    if info is None:
        return None
    try:
        if _names_domain(info.args):
            dom = info.args.decode(payload).dom  # type: ignore[union-attr]
            if dom is not None:
                return str(dom.name)
        elif info is _LOOKUP_BY_NAME:
            return remote.DomainLookupByNameArgs.decode(payload).name
        if _names_domain(info.ret) and type(reply) is outcome.Value:
            return str(info.ret.decode(reply.value).dom.name)  # type: ignore[union-attr]
    except XdrError:  # a payload the upstream refuses: no name to give
        pass
    return None


# ------------------------------------------------------------------------- the relay


def _remote_error(error: BaseException) -> RemoteError:
    """Why a call through the relay failed, as its client gets it: the upstream's error as
    it came, or for a lost upstream connection what libvirt's client says then."""
    if isinstance(error, RemoteError):
        return error
    detail = "client socket is closed" if isinstance(error, ConnectionClosed) else str(error)
    return RemoteError.report(ErrorNumber.INTERNAL_ERROR, ErrorDomain.RPC, detail)


class _Call:
    """A call on its way upstream; ``done`` takes the upstream's answer."""

    __slots__ = ("conn", "packet", "started", "when")

    def __init__(self, conn: RelayConnection, packet: Forward) -> None:
        self.conn = conn
        self.packet = packet
        self.started = trio.current_time()
        self.when = time.time() if conn.relay.audit is not None else 0.0

    def done(self, result: outcome.Outcome[bytes]) -> None:
        packet, conn = self.packet, self.conn
        if isinstance(result, outcome.Error):
            status, payload = MessageStatus.ERROR, _remote_error(result.error).to_wire().encode()
            conn.end_stream(packet.serial)
        else:
            status, payload = MessageStatus.OK, result.unwrap()
        conn.emit(Packet(packet.prog, packet.vers, packet.proc, MessageType.REPLY, packet.serial,
                         status, payload))
        audit = conn.relay.audit
        if audit is not None:
            audit.record(self.when, conn.peer, _describe(packet.prog, packet.proc, packet.info),
                         _domain_name(packet.info, packet.payload, result), result,
                         trio.current_time() - self.started)


class RelayConnection(BackendConnection):
    """One client's connection through the relay: its own upstream connection."""

    forwards = True

    def __init__(self, relay: RelayBackend, emit: EmitEvent, peer: Peer | None) -> None:
        self.relay = relay
        self.emit = emit
        self.peer = peer
        self.upstream: Connection | None = None
        self._streams: dict[int, int] = {}  # the client's serial -> the upstream's
        self._scope = trio.CancelScope()  # the upstream connection's whole life
        self._hold = trio.CancelScope()  # cancelled: close the upstream connection
        self._finished = trio.Event()

    async def run(self, target: ParsedURI,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the upstream connection, then keep it until either side goes away."""
        started = False
        try:
            with self._scope:
                stream = await open_transport(target)
                async with open_connection_stream(stream, target,
                                                  keepalive=self.relay.keepalive) as upstream:
                    upstream.forward_messages(self._message)
                    self.upstream = upstream
                    started = True
                    task_status.started()
                    with self._hold:
                        await upstream.wait_closed()
                    if not self._hold.cancel_called:  # the upstream went away by itself
                        reason = upstream.close_reason
                        self.emit(ConnectionClosedEvent(
                            CloseReason.ERROR if reason is None else int(reason)))
        except Exception:
            if not started:
                raise
            log.exception("relay: the upstream connection failed")
            if not self._hold.cancel_called:  # drop the client, whose calls may hang else
                self.emit(ConnectionClosedEvent(CloseReason.ERROR))
        finally:
            self._finished.set()

    def _message(self, prog: int, proc: int, payload: bytes) -> None:
        self.emit(Packet(prog, 1, proc, MessageType.MESSAGE, 1, MessageStatus.OK, payload))

    def forward(self, packet: Forward) -> None:
        if packet.type in _STREAM_TYPES:
            self._stream_to_upstream(packet)
            return
        call = _Call(self, packet)
        upstream = self.upstream
        assert upstream is not None
        refusal = self.relay.policy.refusal(packet.prog, packet.proc, packet.info)
        if refusal is None and packet.type == MessageType.CALL_WITH_FDS:
            refusal = RemoteError.report(ErrorNumber.INTERNAL_ERROR, ErrorDomain.RPC,
                                         "Sending file descriptors is not supported on this "
                                         "socket")
        if refusal is not None:
            call.done(outcome.Error(refusal))
            return
        info = packet.info
        if info is None or info.kind is not ProcedureKind.STREAM:
            self._send(upstream, call, None)
            return
        serial = self._send(upstream, call, functools.partial(self._stream_to_client,
                                                               packet.serial))
        if serial is not None:
            self._streams[packet.serial] = serial

    def _send(self, upstream: Connection, call: _Call, stream: Any) -> int | None:
        packet = call.packet
        try:
            return upstream.forward_call(packet.prog, packet.vers, packet.proc, packet.payload,
                                         call.done, stream)
        except ConnectionClosed as exc:
            call.done(outcome.Error(exc))
            return None

    # ------------------------------------------------------------------ streams

    def _stream_to_upstream(self, packet: Forward) -> None:
        serial = self._streams.get(packet.serial)
        if serial is None or self.upstream is None:
            return  # no such stream (any more): dropped, as libvirtd drops it
        try:
            status = MessageStatus(packet.status)
        except ValueError:
            return
        self.upstream.send_stream(Packet(packet.prog, packet.vers, packet.proc,
                                         MessageType(packet.type), serial, status,
                                         packet.payload))

    def _stream_to_client(self, serial: int, packet: Packet) -> None:
        self.emit(dataclasses.replace(packet, serial=serial))
        if packet.type == MessageType.STREAM and packet.status != MessageStatus.CONTINUE:
            self.end_stream(serial)  # finished (OK) or failed (ERROR)

    def end_stream(self, serial: int) -> None:
        """The client's stream ``serial`` is over (or never opened)."""
        upstream_serial = self._streams.pop(serial, None)
        if upstream_serial is not None and self.upstream is not None:
            self.upstream.close_stream(upstream_serial)

    # --------------------------------------------------- decoded calls and closing

    @implements(remote.Procedure.CONNECT_SUPPORTS_FEATURE)
    async def supports_feature(self, args: remote.ConnectSupportsFeatureArgs
                               ) -> remote.ConnectSupportsFeatureRet:
        """The features the session does not answer itself are the upstream's."""
        assert self.upstream is not None
        started, when = trio.current_time(), time.time()
        try:
            ret: remote.ConnectSupportsFeatureRet = await self.upstream.call(
                remote.Procedure.CONNECT_SUPPORTS_FEATURE, args)
        except Error as exc:
            self.relay.audit_call(when, self.peer, "CONNECT_SUPPORTS_FEATURE",
                                  outcome.Error(exc), started)
            error = _remote_error(exc)  # a lost upstream is no bug of ours to log
            if error is exc:
                raise
            raise error from exc
        self.relay.audit_call(when, self.peer, "CONNECT_SUPPORTS_FEATURE", outcome.Value(ret),
                              started)
        return ret

    async def aclose(self) -> None:
        self._hold.cancel()
        self._scope.deadline = trio.current_time() + _CLOSE_TIMEOUT
        await self._finished.wait()


class RelayBackend:
    """Serves every client through its own connection to ``upstream`` (a libvirt URI).

    Upstream connections run in ``nursery``. ``pinned``: open the upstream URI's own
    name whatever the client asks for; ``keepalive``: the upstream hop's (interval, count).
    """

    programs = PROGRAMS

    def __init__(self, upstream: str, nursery: trio.Nursery, *, pinned: bool = False,
                 policy: Policy | None = None, audit: AuditLog | None = None,
                 keepalive: tuple[float, int] | None = (5, 6)) -> None:
        parse_uri(upstream)  # a bad URI fails now, not at the first client
        self.upstream = upstream
        self.nursery = nursery
        self.pinned = pinned
        self.policy = policy if policy is not None else Policy()
        self.audit = audit
        self.keepalive = keepalive

    async def open(self, name: str, readonly: bool, emit: EmitEvent) -> RelayConnection:
        peer = current_peer.get(None)
        started, when = trio.current_time(), time.time()
        target = parse_uri(self.upstream, readonly=readonly or self.policy.read_only)
        if not self.pinned:
            target = dataclasses.replace(target, name=name)
        conn = RelayConnection(self, emit, peer)
        try:
            await self.nursery.start(conn.run, target)
        except (OSError, Error) as exc:
            # the upstream refused (its error, as it came), or could not be reached
            error = exc if isinstance(exc, RemoteError) else _unreachable(target, exc)
            self.audit_call(when, peer, "CONNECT_OPEN", outcome.Error(error), started)
            if error is exc:
                raise
            raise error from exc
        self.audit_call(when, peer, "CONNECT_OPEN", outcome.Value(None), started)
        return conn

    def audit_call(self, when: float, peer: Peer | None, procedure: str,
                   result: outcome.Outcome[Any], started: float) -> None:
        """Audit a call about no domain (``started``: its trio time)."""
        if self.audit is not None:
            self.audit.record(when, peer, procedure, None, result, trio.current_time() - started)


def _unreachable(target: ParsedURI, exc: BaseException) -> RemoteError:
    """The error for a client whose upstream connection could not be made."""
    if isinstance(exc, OSError) and target.transport is Transport.UNIX:
        message = f"Failed to connect socket to '{target.socket}': {exc.strerror}"
    else:
        message = f"cannot reach the relay's upstream {target.uri}: {exc}"
    return RemoteError.create(ErrorNumber.SYSTEM_ERROR, ErrorDomain.RPC, message,
                              str1="%s", str2=message, int1=-1, int2=-1)


async def serve_relay(
    upstream: str,
    socket: str | os.PathLike[str] | None = None,
    ro_socket: str | os.PathLike[str] | None = None,
    *,
    tcp: tuple[str, int] | None = None,
    pinned: bool = False,
    read_only: bool = False,
    allow: Iterable[str | int] | None = None,
    deny: Iterable[str | int] = (),
    audit: str | os.PathLike[str] | IO[str] | None = None,
    keepalive: tuple[float, int] | None = (5, 6),
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve a relay to ``upstream`` on a unix socket, a read-only one and/or TCP, until
    cancelled; ``nursery.start`` returns the :class:`~pyvirtrpc.server.Server`.

    ``allow``/``deny`` name procedures as :func:`procedure_key` reads them; ``audit`` is a
    file to append JSON lines to (or an open text file); ``options`` go to the Server.
    """
    policy = Policy.build(read_only=read_only, allow=allow, deny=deny)
    addresses = listen_addresses(socket, ro_socket, tcp)
    if not addresses:
        raise ValueError("no address to listen on")
    audit_log = AuditLog.open(audit) if isinstance(audit, str | os.PathLike) else (
        None if audit is None else AuditLog(audit))
    try:
        async with trio.open_nursery() as nursery:
            backend = RelayBackend(upstream, nursery, pinned=pinned, policy=policy,
                                   audit=audit_log, keepalive=keepalive)
            server = Server(backend, **options)
            await nursery.start(server.serve, *addresses)
            task_status.started(server)
    except BaseExceptionGroup as group:  # our nursery's: raise what happened, not a group
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if audit_log is not None and isinstance(audit, str | os.PathLike):
            audit_log.close()
