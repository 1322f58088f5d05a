"""Every generated struct and union: hypothesis round trips, and the generated codec
against the xdrlib3 reference walker (identical bytes, equal decoded values).

The types are found by walking pyvirtrpc.gen (and tests/data/sample.x, compiled at test
time, which has every construct of the dialect); the strategies come from the type tables.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    ROOT,
    SAMPLE_X,
    conforms,
    defined_types,
    gen_modules,
    instances,
    same,
    sample_module,
    xdr_classes,
)

from pyvirtrpc import xdr, xdrref

MODULES = gen_modules()
SAMPLE = sample_module()
CLASSES = [
    pytest.param(cls, id=f"{name}.{cls.__name__}")
    for name, module in [*MODULES.items(), ("sample", SAMPLE)]
    for cls in xdr_classes(module)
]
# At least this many types in these modules (the .x files only grow); the exact figures
# are checked against the .x files themselves, and every .x file must have its module.
AT_LEAST = {"keepalive": 0, "qemu": 13, "remote": 159, "virerror": 0, "virnet": 5}

codec_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_every_protocol_file_is_generated_and_every_type_is_tested() -> None:
    x_files = sorted((ROOT / "protocol").glob("*.x"))
    assert sorted(MODULES) == [p.stem for p in x_files]
    assert set(AT_LEAST) <= set(MODULES)
    for path in x_files:
        found = [cls.xdr_type.name for cls in xdr_classes(MODULES[path.stem])]
        assert found == defined_types(path), path.name
        assert len(found) >= AT_LEAST.get(path.stem, 0), path.name
    sample_types = [cls.xdr_type.name for cls in xdr_classes(SAMPLE)]
    assert sample_types == defined_types(SAMPLE_X)
    assert len(CLASSES) == len(sample_types) + sum(
        len(xdr_classes(module)) for module in MODULES.values()
    )
    assert len(CLASSES) >= 177 + 13


def test_sample_covers_every_kind_of_type_node() -> None:
    seen: set[str] = set()
    visited: set[int] = set()

    def walk(t: xdr.XdrType) -> None:
        seen.add(type(t).__name__)
        if isinstance(t, xdr.IntType | xdr.FloatType):
            seen.add(t.name)
        if id(t) in visited:
            return
        visited.add(id(t))
        if isinstance(t, xdr.StructType):
            for _, ft in t.fields:
                walk(ft)
        elif isinstance(t, xdr.UnionType):
            walk(t.discriminant_type)
            for _, arm in [*t.arms.values(), *([t.default] if t.default else [])]:
                walk(arm)
        elif isinstance(t, xdr.ArrayType | xdr.FixedArrayType | xdr.OptionalType):
            walk(t.elem)

    for cls in xdr_classes(SAMPLE):
        walk(cls.xdr_type)
    kinds = {t.__name__ for t in xdr.XdrType.__subclasses__()}
    numbers = {t.name for t in (xdr.INT, xdr.UINT, xdr.HYPER, xdr.UHYPER, xdr.FLOAT, xdr.DOUBLE)}
    assert seen == kinds | numbers


@pytest.mark.parametrize("cls", CLASSES)
@codec_settings
@given(data=st.data())
def test_round_trip(cls: type[xdr.XdrStruct], data: st.DataObject) -> None:
    value = data.draw(instances(cls), label="value")
    encoded = value.encode()
    assert len(encoded) % 4 == 0
    decoded = cls.decode(encoded)
    conforms(cls.xdr_type, decoded)
    assert same(decoded, value)
    # unpack_from works at any offset and reports where the value ends
    before, after = b"\xaa" * 8, b"\xbb" * 4
    at_offset, end = cls.unpack_from(before + encoded + after, len(before))
    assert end == len(before) + len(encoded)
    assert same(at_offset, value)
    out = bytearray(before)
    value.pack_into(out)
    assert out == before + encoded


@pytest.mark.parametrize("cls", CLASSES)
@codec_settings
@given(data=st.data())
def test_generated_codec_matches_reference(cls: type[xdr.XdrStruct], data: st.DataObject) -> None:
    value: Any = data.draw(instances(cls), label="value")
    encoded = value.encode()
    assert encoded == xdrref.encode(cls.xdr_type, value)
    by_reference = xdrref.decode(cls.xdr_type, encoded)
    conforms(cls.xdr_type, by_reference)
    assert same(by_reference, value)
    assert same(cls.decode(encoded), by_reference)
