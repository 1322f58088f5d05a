"""Hypothesis strategies derived from the type tables, and helpers for the codec tests.

Nothing here is written per type: every strategy is computed from a class's ``xdr_type``
descriptor (see :mod:`pyvirtrpc.xdr`), so a new struct in a ``.x`` file is covered as soon
as it is generated. Sizes stay small (lists and strings of a few items), plus the exact
limit when the limit is small enough to be cheap.
"""

from __future__ import annotations

import importlib
import json
import linecache
import math
import pkgutil
import sys
import types
from dataclasses import fields
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

import pyvirtrpc.gen
from pyvirtrpc import procedures, xdr
from pyvirtrpc.gen.virnet import MessageError, MessageStatus, MessageType
from pyvirtrpc.rpcgen import compile_file, parse
from pyvirtrpc.rpcgen import parser as ast
from pyvirtrpc.sansio.framing import Packet

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_X = ROOT / "tests" / "data" / "sample.x"

SMALL = 4  # the most items or bytes generated for a variable-size value
CHEAP_LIMIT_BYTES = 64  # strings and opaques up to this limit are also generated full
CHEAP_LIMIT_ITEMS = 8  # the same for arrays

_cache: dict[int, st.SearchStrategy[Any]] = {}


def values(t: xdr.XdrType) -> st.SearchStrategy[Any]:
    """A strategy for valid values of the type ``t``."""
    key = id(t.cls) if isinstance(t, xdr.StructType | xdr.UnionType) else id(t)
    strategy = _cache.get(key)
    if strategy is None:
        strategy = _cache[key] = st.deferred(lambda: _build(t))
    return strategy


def instances(cls: type[xdr.XdrStruct]) -> st.SearchStrategy[Any]:
    return values(cls.xdr_type)


def _sized(limit: int, cheap: int) -> st.SearchStrategy[int]:
    """Sizes 0..SMALL, and the limit itself when that is cheap."""
    small = st.integers(0, min(limit, SMALL))
    return st.one_of(small, st.just(limit)) if SMALL < limit <= cheap else small


def _text(limit: int) -> st.SearchStrategy[str]:
    def fits(s: str) -> bool:
        return len(s.encode("utf-8", "surrogateescape")) <= limit

    # Any text, and byte strings that are not UTF-8 (kept through surrogateescape).
    text = st.text(max_size=min(limit, SMALL)).filter(fits)
    raw = (
        _sized(limit, CHEAP_LIMIT_BYTES)
        .flatmap(lambda n: st.binary(min_size=n, max_size=n))
        .map(lambda b: b.decode("utf-8", "surrogateescape"))
    )
    return st.one_of(text, raw)


def _build(t: xdr.XdrType) -> st.SearchStrategy[Any]:
    if isinstance(t, xdr.IntType):
        return st.integers(t.low, t.high)
    if isinstance(t, xdr.FloatType):
        return st.floats(width=32 if t.code == "f" else 64)
    if isinstance(t, xdr.BoolType):
        return st.booleans()
    if isinstance(t, xdr.EnumType):
        return st.sampled_from(list(t.cls))
    if isinstance(t, xdr.StringType):
        return _text(t.limit)
    if isinstance(t, xdr.OpaqueType):
        return _sized(t.limit, CHEAP_LIMIT_BYTES).flatmap(
            lambda n: st.binary(min_size=n, max_size=n)
        )
    if isinstance(t, xdr.FixedOpaqueType):
        return st.binary(min_size=t.size, max_size=t.size)
    if isinstance(t, xdr.ArrayType):
        elem = values(t.elem)
        return _sized(t.limit, CHEAP_LIMIT_ITEMS).flatmap(
            lambda n: st.lists(elem, min_size=n, max_size=n)
        )
    if isinstance(t, xdr.FixedArrayType):
        return st.lists(values(t.elem), min_size=t.size, max_size=t.size)
    if isinstance(t, xdr.OptionalType):
        return st.one_of(st.none(), values(t.elem))
    if isinstance(t, xdr.StructType):
        cls = t.cls
        return st.tuples(*(values(ft) for _, ft in t.fields)).map(lambda vs: cls(*vs))
    if isinstance(t, xdr.UnionType):
        return _union(t)
    if isinstance(t, xdr.VoidType):
        return st.none()
    raise TypeError(f"no strategy for {t!r}")


def _union(t: xdr.UnionType) -> st.SearchStrategy[Any]:
    cls, disc = t.cls, t.discriminant_type
    options = []
    for label, (_, arm) in t.arms.items():
        d = discriminant(t, label)
        options.append(values(arm).map(lambda v, d=d: cls(d, v)))
    if t.default is not None:
        others: st.SearchStrategy[Any] | None
        if isinstance(disc, xdr.EnumType):
            rest = [m for m in disc.cls if m not in t.arms]
            others = st.sampled_from(rest) if rest else None
        elif isinstance(disc, xdr.BoolType):
            rest_bools = [b for b in (False, True) if b not in t.arms]
            others = st.sampled_from(rest_bools) if rest_bools else None
        else:
            others = values(disc).filter(lambda d: d not in t.arms)
        if others is not None:
            default = values(t.default[1])
            options.append(st.tuples(others, default).map(lambda dv: cls(*dv)))
    return st.one_of(options)


def discriminant(t: xdr.UnionType, label: int) -> Any:
    """A case label as the value a decoded union carries (an enum member, a bool...)."""
    disc = t.discriminant_type
    if isinstance(disc, xdr.EnumType):
        return disc.cls(label)
    return bool(label) if isinstance(disc, xdr.BoolType) else label


def minimal(t: xdr.XdrType) -> Any:
    """The simplest valid value of ``t``: zeros, empty lists, absent optionals, first arms."""
    if isinstance(t, xdr.IntType):
        return 0
    if isinstance(t, xdr.FloatType):
        return 0.0
    if isinstance(t, xdr.BoolType):
        return False
    if isinstance(t, xdr.EnumType):
        return next(iter(t.cls))
    if isinstance(t, xdr.StringType):
        return ""
    if isinstance(t, xdr.OpaqueType):
        return b""
    if isinstance(t, xdr.FixedOpaqueType):
        return bytes(t.size)
    if isinstance(t, xdr.ArrayType):
        return []
    if isinstance(t, xdr.FixedArrayType):
        return [minimal(t.elem) for _ in range(t.size)]
    if isinstance(t, xdr.StructType):
        return t.cls(*(minimal(ft) for _, ft in t.fields))
    if isinstance(t, xdr.UnionType):
        if t.arms:
            label, (_, arm) = next(iter(t.arms.items()))
            return t.cls(discriminant(t, label), minimal(arm))
        assert t.default is not None
        return t.cls(minimal(t.discriminant_type), minimal(t.default[1]))
    return None  # optional and void


# ------------------------------------------------------------------ comparing values


def has_nan(v: Any) -> bool:
    """Whether a value holds a float NaN (whose bits Python may not keep, see same())."""
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, list):
        return any(has_nan(x) for x in v)
    if isinstance(v, xdr.XdrStruct):
        return any(has_nan(getattr(v, f.name)) for f in fields(v))  # type: ignore[arg-type]
    return False


def same(a: Any, b: Any) -> bool:
    """Equality of decoded values, with NaN equal to NaN (XDR floats may carry NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, xdr.XdrStruct):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name))
            for f in fields(a)  # type: ignore[arg-type]
        )
    return bool(a == b)


def conforms(t: xdr.XdrType, v: Any, where: str = "") -> None:
    """Assert that a decoded value has exactly the Python types the type table promises."""

    def check(ok: bool, expected: str) -> None:
        assert ok, f"{where or 'value'}: expected {expected}, got {v!r:.80}"

    if isinstance(t, xdr.IntType):
        check(type(v) is int and t.low <= v <= t.high, t.name)
    elif isinstance(t, xdr.FloatType):
        check(type(v) is float, t.name)
    elif isinstance(t, xdr.BoolType):
        check(type(v) is bool, "bool")
    elif isinstance(t, xdr.EnumType):
        check(type(v) is t.cls, t.cls.__name__)
    elif isinstance(t, xdr.StringType):
        check(type(v) is str, "str")
    elif isinstance(t, xdr.OpaqueType | xdr.FixedOpaqueType):
        check(type(v) is bytes, "bytes")
    elif isinstance(t, xdr.ArrayType | xdr.FixedArrayType):
        check(type(v) is list, "list")
        for i, item in enumerate(v):
            conforms(t.elem, item, f"{where}[{i}]")
    elif isinstance(t, xdr.OptionalType):
        if v is not None:
            conforms(t.elem, v, where)
    elif isinstance(t, xdr.StructType):
        check(type(v) is t.cls, t.cls.__name__)
        for name, ft in t.fields:
            conforms(ft, getattr(v, name), f"{where or t.name}.{name}")
    elif isinstance(t, xdr.UnionType):
        check(type(v) is t.cls, t.cls.__name__)
        d = getattr(v, t.discriminant)
        conforms(t.discriminant_type, d, f"{where or t.name}.{t.discriminant}")
        arm = t.arms.get(d, t.default)
        assert arm is not None
        conforms(arm[1], v.value, f"{where or t.name}.{arm[0]}")
    else:
        check(v is None, "None")


# ------------------------------------------------------------- finding the classes


def xdr_classes(module: types.ModuleType) -> list[type[xdr.XdrStruct]]:
    """The struct and union classes a generated module defines, in source order."""
    return [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, xdr.XdrStruct) and v.__module__ == module.__name__
    ]


def gen_modules() -> dict[str, types.ModuleType]:
    """Every module of pyvirtrpc.gen, by name."""
    return {
        info.name: importlib.import_module(f"pyvirtrpc.gen.{info.name}")
        for info in pkgutil.iter_modules(pyvirtrpc.gen.__path__)
    }


def defined_types(x_file: Path) -> list[str]:
    """The names of the structs and unions a .x file defines (what must be generated)."""
    spec = parse(x_file.read_text(encoding="utf-8"), str(x_file))
    return [d.name for d in spec.definitions if isinstance(d, ast.Struct | ast.Union)]


def compile_module(x_file: Path, name: str) -> types.ModuleType:
    """Compile a .x file with pyvirtrpc.rpcgen and import the result as module ``name``."""
    text = compile_file(str(x_file))
    filename = f"<rpcgen {x_file.name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(text, filename, "exec"), module.__dict__)
    return module


def sample_module() -> types.ModuleType:
    """tests/data/sample.x, compiled at test time (once per session)."""
    return sys.modules.get("rpcgen_sample") or compile_module(SAMPLE_X, "rpcgen_sample")


# ------------------------------------------------------------------- golden packets

GOLDEN = ROOT / "tests" / "golden"


def golden(name: str) -> bytes:
    """One captured packet of tests/golden (length word included)."""
    return (GOLDEN / name).read_bytes()


def golden_names() -> list[str]:
    index = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))
    return [entry["file"] for entry in index["packets"]]


def payload_class(packet: Packet) -> type[xdr.XdrStruct] | None:
    """The type of a packet's payload, from the procedure tables.

    None for a void payload, and for the payload of a procedure we do not know.
    """
    if packet.status == MessageStatus.ERROR:
        return MessageError
    info = procedures.lookup(packet.prog, packet.proc)
    if info is None:
        return None
    return info.ret if packet.type == MessageType.REPLY else info.args
