"""XDR (RFC 4506) runtime for the generated codecs.

Three things live here:

* ``XdrError``, the one exception family every encode or decode failure raises;
* the helpers that generated ``pack_into``/``unpack_from`` methods call for the
  variable-size parts of a message (strings, opaques, counts, optionals);
* the type descriptors (``StructType``, ``StringType``...) that each generated class
  carries as ``xdr_type``: the type tables that the reference walker
  (:mod:`pyvirtrpc.xdrref`), the hypothesis strategies and error diagnosis work from.

Fixed-size runs of fields are packed by generated code with precompiled
``struct.Struct`` objects; a ``struct.error`` (short buffer, integer out of range, wrong
type) is caught by :class:`XdrStruct`'s ``encode``/``decode`` and re-diagnosed by the
reference walker so that the message names the type and the field.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from pyvirtrpc.errors import ProtocolError

S_INT = struct.Struct(">i")
S_UINT = struct.Struct(">I")
S_HYPER = struct.Struct(">q")
S_UHYPER = struct.Struct(">Q")
S_FLOAT = struct.Struct(">f")
S_DOUBLE = struct.Struct(">d")

ABSENT = b"\0\0\0\0"
PRESENT = b"\0\0\0\1"
UNLIMITED = 0xFFFFFFFF
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_FAILURES = (struct.error, ValueError, TypeError, AttributeError, IndexError, OverflowError)


class XdrError(ProtocolError, ValueError):
    """Malformed XDR data, or a value that cannot be encoded.

    ``where`` names the type and field path (``remote_nonnull_domain.name``).
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


# ---------------------------------------------------------------- pack helpers


def string_bytes(value: str, where: str) -> bytes:
    """The bytes of a string on the wire (undecodable bytes were kept as surrogates)."""
    if not isinstance(value, str):
        raise XdrError(where, f"expected str, got {type(value).__name__}")
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise XdrError(where, f"cannot encode {value!r:.60}: {exc.reason}") from None


def pack_string(out: bytearray, value: str, limit: int, where: str) -> None:
    try:
        data = value.encode("utf-8", "surrogateescape")
    except (AttributeError, UnicodeEncodeError):
        data = string_bytes(value, where)  # raises, saying why
    n = len(data)
    if n > limit:
        raise XdrError(where, f"string of {n} bytes exceeds the limit of {limit}")
    out += S_UINT.pack(n)
    out += data
    out += _PAD[n & 3]


def pack_opaque(out: bytearray, value: bytes, limit: int, where: str) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise XdrError(where, f"expected bytes, got {type(value).__name__}")
    n = len(value)
    if n > limit:
        raise XdrError(where, f"opaque of {n} bytes exceeds the limit of {limit}")
    out += S_UINT.pack(n)
    out += value
    out += _PAD[n & 3]


def check_fixed_opaque(value: bytes, size: int, where: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise XdrError(where, f"expected exactly {size} bytes, got {value!r:.60}")
    return value


def pack_count(out: bytearray, items: Sequence[Any], limit: int, where: str) -> int:
    n = len(items)
    if n > limit:
        raise XdrError(where, f"{n} items exceed the limit of {limit}")
    out += S_UINT.pack(n)
    return n


def pack_values(out: bytearray, code: str, items: Sequence[Any]) -> None:
    """Pack a list of fixed-size numbers (one struct format character each)."""
    out += struct.pack(f">{len(items)}{code}", *items)


def check_bool(value: bool, where: str) -> int:
    if value is True or value is False or value == 0 or value == 1:
        return int(value)
    raise XdrError(where, f"bool must be True or False, got {value!r:.60}")


def check_enum(value: int, cls: type[enum.IntEnum], where: str) -> int:
    if value in cls._value2member_map_:
        return int(value)
    raise XdrError(where, f"{value!r:.60} is not a valid {cls.__name__}")


# -------------------------------------------------------------- unpack helpers


def unpack_opaque(buf: bytes, pos: int, limit: int, where: str) -> tuple[bytes, int]:
    """A variable-length opaque (strings too: the caller decodes the bytes)."""
    try:
        (n,) = S_UINT.unpack_from(buf, pos)
    except struct.error:
        raise XdrError(where, f"truncated: length word needed at offset {pos}") from None
    if n > limit:
        raise XdrError(where, f"length {n} exceeds the limit of {limit}")
    start = pos + 4
    end = start + n
    padded = (end + 3) & ~3
    if padded > len(buf) or (n & 3 and buf[end:padded] != _PAD[n & 3]):
        skip_padded(buf, start, n, where)  # raises, saying which
    return buf[start:end], padded


def skip_padded(buf: bytes, start: int, n: int, where: str) -> int:
    """Return the offset after ``n`` bytes at ``start`` and their zero padding."""
    end = start + n
    padded = (end + 3) & ~3
    if padded > len(buf):
        raise XdrError(where, f"truncated: {n} bytes needed at offset {start}")
    if padded != end and buf[end:padded] != _PAD[n & 3]:
        raise XdrError(where, f"non-zero padding at offset {end}")
    return padded


def unpack_count(buf: bytes, pos: int, limit: int, where: str) -> tuple[int, int]:
    if pos + 4 > len(buf):
        raise XdrError(where, f"truncated: item count needed at offset {pos}")
    (n,) = S_UINT.unpack_from(buf, pos)
    if n > limit:
        raise XdrError(where, f"{n} items exceed the limit of {limit}")
    return n, pos + 4


def unpack_flag(buf: bytes, pos: int, where: str) -> tuple[bool, int]:
    """The presence word of an optional value."""
    if pos + 4 > len(buf):
        raise XdrError(where, f"truncated: presence word needed at offset {pos}")
    (flag,) = S_UINT.unpack_from(buf, pos)
    if flag > 1:
        raise XdrError(where, f"presence word must be 0 or 1, got {flag}")
    return flag == 1, pos + 4


def unpack_values(buf: bytes, pos: int, code: str, size: int, n: int) -> tuple[list[Any], int]:
    """Unpack ``n`` fixed-size numbers of one struct format character."""
    return list(struct.unpack_from(f">{n}{code}", buf, pos)), pos + n * size


def as_bool(value: int, where: str) -> bool:
    if value == 0:
        return False
    if value == 1:
        return True
    raise XdrError(where, f"bool must be 0 or 1, got {value}")


def unknown_arm(where: str, discriminant: object) -> XdrError:
    return XdrError(where, f"unknown union discriminant {discriminant!r:.60}")


# ------------------------------------------------------------ type descriptors


class XdrType:
    """A node of the type tables; see the module docstring."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class IntType(XdrType):
    name: str
    code: str
    size: int
    low: int
    high: int


INT = IntType("int", "i", 4, -(2**31), 2**31 - 1)
UINT = IntType("unsigned int", "I", 4, 0, 2**32 - 1)
HYPER = IntType("hyper", "q", 8, -(2**63), 2**63 - 1)
UHYPER = IntType("unsigned hyper", "Q", 8, 0, 2**64 - 1)


@dataclass(frozen=True, slots=True)
class FloatType(XdrType):
    name: str
    code: str
    size: int


FLOAT = FloatType("float", "f", 4)
DOUBLE = FloatType("double", "d", 8)


@dataclass(frozen=True, slots=True)
class BoolType(XdrType):
    pass


@dataclass(frozen=True, slots=True)
class VoidType(XdrType):
    pass


BOOL = BoolType()
VOID = VoidType()


@dataclass(frozen=True, slots=True)
class EnumType(XdrType):
    cls: type[enum.IntEnum]


@dataclass(frozen=True, slots=True)
class StringType(XdrType):
    limit: int


@dataclass(frozen=True, slots=True)
class OpaqueType(XdrType):
    limit: int


@dataclass(frozen=True, slots=True)
class FixedOpaqueType(XdrType):
    size: int


@dataclass(frozen=True, slots=True)
class ArrayType(XdrType):
    elem: XdrType
    limit: int


@dataclass(frozen=True, slots=True)
class FixedArrayType(XdrType):
    elem: XdrType
    size: int


@dataclass(frozen=True, slots=True)
class OptionalType(XdrType):
    elem: XdrType


@dataclass(frozen=True, slots=True)
class StructType(XdrType):
    name: str
    cls: type[XdrStruct]
    fields: tuple[tuple[str, XdrType], ...]


@dataclass(frozen=True, slots=True)
class UnionType(XdrType):
    name: str
    cls: type[XdrStruct]
    discriminant: str
    discriminant_type: XdrType
    arms: Mapping[int, tuple[str, XdrType]] = field(default_factory=dict)
    default: tuple[str, XdrType] | None = None


# ------------------------------------------------------------ generated bases


class XdrStruct:
    """Base of every generated struct and union class.

    Subclasses are slotted dataclasses with generated ``pack_into(out)`` and
    ``unpack_from(buf, pos)``; a union has two fields, its discriminant and ``value``.
    """

    __slots__ = ()
    xdr_type: ClassVar[StructType | UnionType]

    def pack_into(self, out: bytearray) -> None:
        raise NotImplementedError

    @classmethod
    def unpack_from(cls, buf: bytes, pos: int) -> tuple[Self, int]:
        raise NotImplementedError

    def encode(self) -> bytes:
        out = bytearray()
        try:
            self.pack_into(out)
        except XdrError:
            raise
        except _FAILURES as exc:
            raise _diagnose_encode(self, exc) from None
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one value from ``data``; trailing bytes are an error."""
        try:
            value, pos = cls.unpack_from(data, 0)
        except XdrError:
            raise
        except _FAILURES as exc:
            raise _diagnose_decode(cls, data, exc) from None
        if pos != len(data):
            raise XdrError(cls.xdr_type.name, f"{len(data) - pos} trailing bytes")
        return value


def _diagnose_encode(value: XdrStruct, exc: Exception) -> XdrError:
    from pyvirtrpc import xdrref

    try:
        xdrref.encode(value.xdr_type, value)
    except XdrError as precise:
        return precise
    return XdrError(value.xdr_type.name, f"cannot encode: {exc}")


def _diagnose_decode(cls: type[XdrStruct], data: bytes, exc: Exception) -> XdrError:
    from pyvirtrpc import xdrref

    try:
        xdrref.decode(cls.xdr_type, data)
    except XdrError as precise:
        return precise
    return XdrError(cls.xdr_type.name, f"cannot decode: {exc}")
