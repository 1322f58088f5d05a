"""The reference codec: a plain walker over the type tables, one xdrlib3 call per field.

It is slow and obviously right. The generated code is tested against it byte for byte,
benchmarks measure against it, and when generated code fails on bad input it is run
again here to find the exact field to blame.
"""

from __future__ import annotations

import math
from typing import Any

import xdrlib3

from pyvirtrpc import xdr
from pyvirtrpc.xdr import XdrError, XdrType


def encode(t: XdrType, value: Any) -> bytes:
    packer = xdrlib3.Packer()
    _pack(t, value, packer, _name(t))
    return packer.get_buffer()


def decode(t: XdrType, data: bytes) -> Any:
    unpacker = xdrlib3.Unpacker(data)
    value = _unpack(t, unpacker, _name(t))
    remaining = len(data) - unpacker.get_position()
    if remaining:
        raise XdrError(_name(t), f"{remaining} trailing bytes")
    return value


def _name(t: XdrType) -> str:
    if isinstance(t, xdr.StructType | xdr.UnionType):
        return t.name
    return type(t).__name__


def _pack(t: XdrType, v: Any, p: xdrlib3.Packer, where: str) -> None:
    if isinstance(t, xdr.IntType):
        if type(v) is bool or not isinstance(v, int):
            raise XdrError(where, f"expected an integer, got {type(v).__name__}")
        if not t.low <= v <= t.high:
            raise XdrError(where, f"{v} out of range for {t.name}")
        {"i": p.pack_int, "I": p.pack_uint, "q": p.pack_hyper, "Q": p.pack_uhyper}[t.code](v)
    elif isinstance(t, xdr.FloatType):
        if not isinstance(v, int | float):
            raise XdrError(where, f"expected a float, got {type(v).__name__}")
        if t.code == "f":
            if math.isfinite(v) and abs(v) > 3.4028234663852886e38:
                raise XdrError(where, f"{v} out of range for float")
            p.pack_float(v)
        else:
            p.pack_double(v)
    elif isinstance(t, xdr.BoolType):
        p.pack_uint(xdr.check_bool(v, where))
    elif isinstance(t, xdr.EnumType):
        p.pack_int(xdr.check_enum(v, t.cls, where))
    elif isinstance(t, xdr.StringType):
        data = xdr.string_bytes(v, where)
        if len(data) > t.limit:
            raise XdrError(where, f"string of {len(data)} bytes exceeds the limit of {t.limit}")
        p.pack_string(data)
    elif isinstance(t, xdr.OpaqueType):
        if not isinstance(v, bytes | bytearray):
            raise XdrError(where, f"expected bytes, got {type(v).__name__}")
        if len(v) > t.limit:
            raise XdrError(where, f"opaque of {len(v)} bytes exceeds the limit of {t.limit}")
        p.pack_opaque(bytes(v))
    elif isinstance(t, xdr.FixedOpaqueType):
        p.pack_fopaque(t.size, xdr.check_fixed_opaque(v, t.size, where))
    elif isinstance(t, xdr.ArrayType | xdr.FixedArrayType):
        if not isinstance(v, list | tuple):
            raise XdrError(where, f"expected a list, got {type(v).__name__}")
        if isinstance(t, xdr.ArrayType):
            if len(v) > t.limit:
                raise XdrError(where, f"{len(v)} items exceed the limit of {t.limit}")
            p.pack_uint(len(v))
        elif len(v) != t.size:
            raise XdrError(where, f"expected exactly {t.size} items, got {len(v)}")
        for i, item in enumerate(v):
            _pack(t.elem, item, p, f"{where}[{i}]")
    elif isinstance(t, xdr.OptionalType):
        p.pack_uint(v is not None)
        if v is not None:
            _pack(t.elem, v, p, where)
    elif isinstance(t, xdr.StructType):
        if not isinstance(v, t.cls):
            raise XdrError(where, f"expected {t.cls.__name__}, got {type(v).__name__}")
        for name, ft in t.fields:
            _pack(ft, getattr(v, name), p, f"{where}.{name}")
    elif isinstance(t, xdr.UnionType):
        if not isinstance(v, t.cls):
            raise XdrError(where, f"expected {t.cls.__name__}, got {type(v).__name__}")
        d = getattr(v, t.discriminant)
        _pack(t.discriminant_type, d, p, f"{where}.{t.discriminant}")
        arm = t.arms.get(d, t.default)
        if arm is None:
            raise xdr.unknown_arm(f"{where}.{t.discriminant}", d)
        _pack(arm[1], v.value, p, f"{where}.{arm[0]}")  # type: ignore[attr-defined]
    elif not isinstance(t, xdr.VoidType):
        raise TypeError(f"unknown XDR type node {t!r}")


def _unpack(t: XdrType, u: xdrlib3.Unpacker, where: str) -> Any:
    try:
        return _unpack_node(t, u, where)
    except (EOFError, xdrlib3.Error) as exc:
        raise XdrError(where, f"truncated: {str(exc) or 'end of data'}") from None


def _unpack_node(t: XdrType, u: xdrlib3.Unpacker, where: str) -> Any:
    if isinstance(t, xdr.IntType):
        return {"i": u.unpack_int, "I": u.unpack_uint, "q": u.unpack_hyper, "Q": u.unpack_uhyper}[
            t.code
        ]()
    if isinstance(t, xdr.FloatType):
        return u.unpack_float() if t.code == "f" else u.unpack_double()
    if isinstance(t, xdr.BoolType):
        return xdr.as_bool(u.unpack_uint(), where)
    if isinstance(t, xdr.EnumType):
        value = u.unpack_int()
        xdr.check_enum(value, t.cls, where)
        return t.cls(value)
    if isinstance(t, xdr.StringType | xdr.OpaqueType):
        n = u.unpack_uint()
        if n > t.limit:
            raise XdrError(where, f"length {n} exceeds the limit of {t.limit}")
        data = _fixed(u, n, where)
        return data.decode("utf-8", "surrogateescape") if isinstance(t, xdr.StringType) else data
    if isinstance(t, xdr.FixedOpaqueType):
        return _fixed(u, t.size, where)
    if isinstance(t, xdr.ArrayType | xdr.FixedArrayType):
        if isinstance(t, xdr.ArrayType):
            n = u.unpack_uint()
            if n > t.limit:
                raise XdrError(where, f"{n} items exceed the limit of {t.limit}")
        else:
            n = t.size
        return [_unpack(t.elem, u, f"{where}[{i}]") for i in range(n)]
    if isinstance(t, xdr.OptionalType):
        flag = u.unpack_uint()
        if flag > 1:
            raise XdrError(where, f"presence word must be 0 or 1, got {flag}")
        return _unpack(t.elem, u, where) if flag else None
    if isinstance(t, xdr.StructType):
        values = [_unpack(ft, u, f"{where}.{name}") for name, ft in t.fields]
        return t.cls(*values)
    if isinstance(t, xdr.UnionType):
        d = _unpack(t.discriminant_type, u, f"{where}.{t.discriminant}")
        arm = t.arms.get(d, t.default)
        if arm is None:
            raise xdr.unknown_arm(f"{where}.{t.discriminant}", d)
        return t.cls(d, _unpack(arm[1], u, f"{where}.{arm[0]}"))  # type: ignore[call-arg]
    if isinstance(t, xdr.VoidType):
        return None
    raise TypeError(f"unknown XDR type node {t!r}")


def _fixed(u: xdrlib3.Unpacker, n: int, where: str) -> bytes:
    start = u.get_position()
    data: bytes = u.unpack_fopaque(n)
    pad = u.get_buffer()[start + n : u.get_position()]
    if pad.strip(b"\0"):
        raise XdrError(where, f"non-zero padding at offset {start + n}")
    return data
