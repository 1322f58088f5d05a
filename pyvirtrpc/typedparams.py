"""libvirt's typed parameters (virTypedParameter) as Python values."""

from __future__ import annotations

from collections.abc import Iterable

from pyvirtrpc.gen.remote import TypedParam, TypedParamType, TypedParamValue

TypedValue = int | float | bool | str


def decode_params(params: Iterable[TypedParam]) -> dict[str, TypedValue]:
    """``{field: value}``; booleans become ``bool``, the rest keep their Python type."""
    return {
        p.field: bool(p.value.value) if p.value.type == TypedParamType.BOOLEAN else p.value.value
        for p in params
    }


def encode_params(items: Iterable[tuple[str, TypedParamType, TypedValue]]) -> list[TypedParam]:
    """Typed parameters from ``(field, type, value)`` triples, in order."""
    return [
        TypedParam(field, TypedParamValue(kind, _wire_value(kind, value)))
        for field, kind, value in items
    ]


def _wire_value(kind: TypedParamType, value: TypedValue) -> TypedValue:
    return int(value) if kind == TypedParamType.BOOLEAN else value
