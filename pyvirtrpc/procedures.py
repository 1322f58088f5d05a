"""What a procedure is: the rows of the generated procedure tables."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pyvirtrpc.xdr import XdrStruct


class ProcedureKind(enum.StrEnum):
    CALL = "call"  # a CALL answered by a REPLY
    EVENT = "event"  # a MESSAGE the server sends on its own
    STREAM = "stream"  # a CALL that opens a data stream


@dataclass(frozen=True, slots=True)
class ProcedureInfo:
    program: int
    version: int
    number: enum.IntEnum
    api: str  # libvirt's public API name, as used in its error messages
    args: type[XdrStruct] | None = None
    ret: type[XdrStruct] | None = None
    kind: ProcedureKind = ProcedureKind.CALL
    stream: str | None = None  # "read", "write" or "both" for stream procedures
    writes: bool = False  # refused on a read-only connection
    fds: bool = False

    @property
    def name(self) -> str:
        return self.number.name


def lookup(program: int, number: int) -> ProcedureInfo | None:
    """The table row of a procedure of any program we know, or None."""
    return _tables().get((program, number))


_TABLE: dict[tuple[int, int], ProcedureInfo] = {}


def _tables() -> dict[tuple[int, int], ProcedureInfo]:
    if not _TABLE:  # the generated modules import this one: load them on first use
        from pyvirtrpc.gen import keepalive, mockctl, qemu, remote

        for module in (remote, qemu, keepalive, mockctl):
            for info in module.PROCEDURES.values():
                _TABLE[info.program, int(info.number)] = info
    return _TABLE
