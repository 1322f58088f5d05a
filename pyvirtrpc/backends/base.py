"""What a server serves: a backend, and a connection to it per client.

libvirtd opens a hypervisor connection (``virConnect``) for each client at CONNECT_OPEN and
calls that connection's driver for every procedure; the server here does the same with a
:class:`Backend`: :meth:`Backend.open` returns a :class:`BackendConnection`, which
implements procedures and emits events. The server knows nothing else about it.

A connection class implements a procedure with a method decorated by :func:`implements`;
the method takes the decoded ``args`` struct (or nothing for procedures without
arguments) and returns the ``ret`` struct (or None), or raises
:class:`~pyvirtrpc.errors.RemoteError`. Plain methods run inline, in the order the client
sent its calls; ``async`` methods run as tasks, concurrently (up to the server's in-flight
limit per client), as libvirtd's worker threads run them. A procedure without a method
is answered as libvirt answers for a driver that lacks it ("this function is not
supported by the connection driver: virX").

A connection class with ``forwards = True`` (the relay) gets, once open, every call and
stream packet undecoded in :meth:`BackendConnection.forward` (except the session's own
procedures, see :class:`~pyvirtrpc.sansio.server.Forward`), and answers by emitting whole
packets.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from pyvirtrpc.events import Event, EventFamily
from pyvirtrpc.procedures import ProcedureInfo
from pyvirtrpc.sansio.framing import Packet
from pyvirtrpc.sansio.server import Forward

__all__ = ["Backend", "BackendConnection", "EmitEvent", "Implementation", "implements"]

EmitEvent = Callable[[Event | Packet], None]
"""How a backend connection hands an event to its client (never blocks).

A :class:`~pyvirtrpc.events.ConnectionClosedEvent` says that the backend connection is
gone: the client gets it (if it registered a close callback) and is then disconnected. A
:class:`~pyvirtrpc.sansio.framing.Packet` (from a forwarding connection) is sent as it is.
"""

Implementation = tuple[Callable[..., Any], bool]
"""A bound method implementing a procedure, and whether it is ``async``."""

_MARK = "__pyvirtrpc_procedure__"


def implements(
    procedure: ProcedureInfo | Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a BackendConnection method as the implementation of ``procedure``.

    ``procedure`` is a generated ``Procedure`` member (``remote.Procedure.DOMAIN_GET_INFO``)
    or a ProcedureInfo.
    """
    info = procedure if isinstance(procedure, ProcedureInfo) else _info(procedure)

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        setattr(function, _MARK, (info.program, int(info.number)))
        return function

    return mark


def _info(member: Any) -> ProcedureInfo:
    module = inspect.getmodule(type(member))
    table = getattr(module, "PROCEDURES", None)
    if table is None or member not in table:
        raise TypeError(f"{member!r} is not a procedure of a generated program")
    info: ProcedureInfo = table[member]
    return info


class BackendConnection:
    """One client's connection to a backend; subclasses implement procedures.

    ``event_families`` are the kinds of events this backend can emit; the server refuses
    registrations for the others as libvirt does for a driver without them.
    """

    event_families: ClassVar[frozenset[EventFamily]] = frozenset({EventFamily.DOMAIN})
    forwards: ClassVar[bool] = False
    _procedures: ClassVar[dict[tuple[int, int], tuple[str, bool]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = dict(cls._procedures)
        for name, function in inspect.getmembers(cls, inspect.isfunction):
            key = getattr(function, _MARK, None)
            if key is not None:
                table[key] = (name, inspect.iscoroutinefunction(function))
        cls._procedures = table

    def implementation(self, info: ProcedureInfo) -> Implementation | None:
        """The method implementing ``info``, or None (not supported)."""
        entry = self._procedures.get((info.program, int(info.number)))
        if entry is None:
            return None
        name, is_async = entry
        return getattr(self, name), is_async

    def forward(self, packet: Forward) -> None:
        """With ``forwards``: a call or stream packet to forward (never blocks); answer a
        call by emitting its REPLY packet, with the client's serial."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """The client closed its connection (or went away)."""


class Backend(Protocol):
    """What the server serves."""

    programs: frozenset[int]
    """Program numbers (version 1) the backend's connections implement procedures of."""

    async def open(self, name: str, readonly: bool, emit: EmitEvent) -> BackendConnection:
        """CONNECT_OPEN: a connection for one client, or raise RemoteError.

        ``name`` is the URI the client sent ("" when it named none); ``emit`` delivers
        events to this client (the server filters them by its registrations).
        """
        ...
