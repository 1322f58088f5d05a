"""Turn a parsed .x specification into a readable Python module.

Structs become slotted dataclasses with straight-line ``pack_into``/``unpack_from``
methods: each run of fixed-size fields is packed or unpacked by one precompiled
``struct.Struct``; strings, opaques, arrays and optionals go through the small helpers of
:mod:`pyvirtrpc.xdr`. Each class also carries its ``xdr_type`` descriptor (the type
tables), and a procedure enum becomes a ``PROCEDURES`` table.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from pyvirtrpc.rpcgen import parser as ast
from pyvirtrpc.rpcgen.parser import ParseError

UNLIMITED = 0xFFFFFFFF

# kind -> (struct format character, size, descriptor expression, python type)
PRIMITIVES = {
    "int": ("i", 4, "xdr.INT", "int"),
    "unsigned int": ("I", 4, "xdr.UINT", "int"),
    "hyper": ("q", 8, "xdr.HYPER", "int"),
    "unsigned hyper": ("Q", 8, "xdr.UHYPER", "int"),
    "float": ("f", 4, "xdr.FLOAT", "float"),
    "double": ("d", 8, "xdr.DOUBLE", "float"),
    "bool": ("I", 4, "xdr.BOOL", "bool"),
}


@dataclass(frozen=True, slots=True)
class Model:
    """A resolved type: typedefs expanded, sizes resolved to numbers."""

    kind: str  # a PRIMITIVES key, or enum struct union string opaque fopaque array farray optional
    ref: str | None = None  # the .x name of an enum, struct or union
    size: int | None = None
    elem: Model | None = None

    @property
    def fixed(self) -> bool:
        return self.kind in PRIMITIVES or self.kind in ("enum", "fopaque")


Field = tuple[str, Model, str]  # Python name, type, name in error messages


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def py_field(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) or name in ("buf", "pos", "out", "cls") else name


def strip_common_prefix(names: list[str]) -> list[str]:
    if len(names) < 2:
        return names
    common = names[0]
    for name in names[1:]:
        while not name.startswith(common):
            common = common[:-1]
    common = common[: common.rfind("_") + 1]
    stripped = [name[len(common) :] for name in names]
    if all(s and s.isidentifier() and not s[0].isdigit() for s in stripped):
        return stripped
    return names


class Emitter:
    def __init__(self, spec: ast.Specification, source: str) -> None:
        self.spec = spec
        self.source = source
        self.prefix = spec.annotations.get("prefix", "")
        self.constants: dict[str, int] = {"FALSE": 0, "TRUE": 1}  # for bool unions
        self.types: dict[str, ast.Enum | ast.Struct | ast.Union | ast.Typedef] = {}
        self.enum_members: dict[str, str] = {}  # constant name -> Class.MEMBER
        self.formats: dict[str, str] = {}  # struct format -> constant name
        self.counter = 0
        self.defined: set[str] = set()  # the types emitted so far, which later ones may use
        for definition in spec.definitions:
            self.declare(definition)

    # -- symbol tables

    def fail(self, token: ast.Token | None, message: str) -> ParseError:
        line, col = (token.line, token.col) if token else (0, 0)
        return ParseError(self.spec.filename, line, col, message)

    def declare(self, d: ast.Definition) -> None:
        if isinstance(d, ast.Const):
            self.constants[d.name] = self.number(d.value, d.token)
            return
        name = d.decl.name if isinstance(d, ast.Typedef) else d.name
        if name in self.types:
            raise self.fail(d.token, f"{name} is defined twice")
        self.types[name] = d
        if isinstance(d, ast.Enum):
            explicit = d.annotations.get("member-prefix")
            if explicit:
                members = [m.name.removeprefix(explicit) for m in d.members]
            else:
                members = strip_common_prefix([m.name for m in d.members])
            for member, py_name in zip(d.members, members, strict=True):
                self.constants[member.name] = self.number(member.value, member.token)
                self.enum_members[member.name] = f"{self.class_name(d.name)}.{py_name}"

    def number(self, text: str, token: ast.Token | None) -> int:
        if text in self.constants:
            return self.constants[text]
        digits = text.removeprefix("-")
        octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX"  # C's 010
        try:
            value = int(digits, 8 if octal else 0)
        except ValueError:
            raise self.fail(token, f"unknown constant {text!r}") from None
        return -value if text.startswith("-") else value

    def class_name(self, name: str) -> str:
        if self.prefix and name.startswith(self.prefix):
            name = name[len(self.prefix) :]
        return camel(name)

    def resolve(self, decl: ast.Decl) -> Model:
        size = UNLIMITED if decl.size is None else self.number(decl.size, decl.token)
        if decl.type in ("string", "opaque"):
            if decl.type == "string" and decl.shape != "variable":
                raise self.fail(decl.token, "a string needs <N> or <>")
            if decl.shape == "optional":
                raise self.fail(decl.token, f"{decl.type} cannot be optional directly")
            return Model("fopaque" if decl.shape == "fixed" else decl.type, size=size)
        if decl.type in PRIMITIVES:
            base = Model(decl.type)
        elif decl.type in self.types:
            if decl.type not in self.defined:
                message = f"{decl.type} is used before its definition (so is a recursive type)"
                raise self.fail(decl.token, message)
            definition = self.types[decl.type]
            if isinstance(definition, ast.Typedef):
                base = self.resolve(definition.decl)
            elif isinstance(definition, ast.Enum):
                base = Model("enum", decl.type)
            else:
                base = Model("struct" if isinstance(definition, ast.Struct) else "union", decl.type)
        else:
            raise self.fail(decl.token, f"unknown type {decl.type!r}")
        if decl.shape == "scalar":
            return base
        if decl.shape == "optional":
            return Model("optional", elem=base)
        return Model("array" if decl.shape == "variable" else "farray", size=size, elem=base)

    # -- naming helpers

    def py_type(self, m: Model) -> str:
        if m.kind in PRIMITIVES:
            return PRIMITIVES[m.kind][3]
        if m.kind in ("enum", "struct", "union"):
            assert m.ref is not None
            return self.class_name(m.ref)
        if m.kind == "string":
            return "str"
        if m.kind in ("opaque", "fopaque"):
            return "bytes"
        assert m.elem is not None
        if m.kind == "optional":
            return f"{self.py_type(m.elem)} | None"
        return f"list[{self.py_type(m.elem)}]"

    def descriptor(self, m: Model) -> str:
        if m.kind in PRIMITIVES:
            return PRIMITIVES[m.kind][2]
        if m.kind == "enum":
            return f"xdr.EnumType({self.py_type(m)})"
        if m.kind in ("struct", "union"):
            return f"{self.py_type(m)}.xdr_type"
        if m.kind == "string":
            return f"xdr.StringType({m.size})"
        if m.kind == "opaque":
            return f"xdr.OpaqueType({m.size})"
        if m.kind == "fopaque":
            return f"xdr.FixedOpaqueType({m.size})"
        assert m.elem is not None
        if m.kind == "optional":
            return f"xdr.OptionalType({self.descriptor(m.elem)})"
        wrapper = "ArrayType" if m.kind == "array" else "FixedArrayType"
        return f"xdr.{wrapper}({self.descriptor(m.elem)}, {m.size})"

    def fmt(self, m: Model) -> tuple[str, int]:
        """The struct format and size of a fixed-size model."""
        if m.kind in PRIMITIVES:
            code, size, _, _ = PRIMITIVES[m.kind]
            return code, size
        if m.kind == "enum":
            return "i", 4
        assert m.kind == "fopaque" and m.size is not None
        pad = -m.size % 4
        return f"{m.size}s" + (f"{pad}x" if pad else ""), m.size + pad

    def struct_const(self, fmt: str) -> str:
        if fmt not in self.formats:
            self.formats[fmt] = "_S_" + fmt
        return self.formats[fmt]

    def temp(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    # -- packing

    def pack_arg(self, m: Model, expr: str, where: str) -> str:
        """The argument that goes into a struct.pack call for a fixed-size value."""
        if m.kind == "bool":
            return f"xdr.check_bool({expr}, {where!r})"
        if m.kind == "enum":
            return f"xdr.check_enum({expr}, {self.py_type(m)}, {where!r})"
        if m.kind == "fopaque":
            return f"xdr.check_fixed_opaque({expr}, {m.size}, {where!r})"
        return expr

    def pack_run(self, run: list[tuple[Model, str, str]], pad: str) -> list[str]:
        fmt = "".join(self.fmt(m)[0] for m, _, _ in run)
        args = ", ".join(self.pack_arg(m, expr, where) for m, expr, where in run)
        return [f"{pad}out += {self.struct_const(fmt)}.pack({args})"]

    def pack(self, m: Model, expr: str, where: str, pad: str) -> list[str]:
        if m.fixed:
            return self.pack_run([(m, expr, where)], pad)
        if m.kind in ("struct", "union"):
            return [f"{pad}{expr}.pack_into(out)"]
        if m.kind == "string":
            return [f"{pad}xdr.pack_string(out, {expr}, {m.size}, {where!r})"]
        if m.kind == "opaque":
            return [f"{pad}xdr.pack_opaque(out, {expr}, {m.size}, {where!r})"]
        assert m.elem is not None
        if m.kind == "optional":
            return [
                f"{pad}if {expr} is None:",
                f"{pad}    out += xdr.ABSENT",
                f"{pad}else:",
                f"{pad}    out += xdr.PRESENT",
                *self.pack(m.elem, expr, where, pad + "    "),
            ]
        if m.kind == "array":
            lines = [f"{pad}xdr.pack_count(out, {expr}, {m.size}, {where!r})"]
        else:
            lines = [
                f"{pad}if len({expr}) != {m.size}:",
                f"{pad}    raise xdr.XdrError({where!r}, 'expected exactly {m.size} items')",
            ]
        if m.elem.kind in PRIMITIVES and m.elem.kind != "bool":
            return [*lines, f"{pad}xdr.pack_values(out, {self.fmt(m.elem)[0]!r}, {expr})"]
        item = self.temp("item")
        return [
            *lines,
            f"{pad}for {item} in {expr}:",
            *self.pack(m.elem, item, where + "[]", pad + "    "),
        ]

    # -- unpacking

    def unpack_run(self, run: list[tuple[Model, str, str]], pad: str) -> list[str]:
        fmt = "".join(self.fmt(m)[0] for m, _, _ in run)
        size = sum(self.fmt(m)[1] for m, _, _ in run)
        targets = ", ".join(var for _, var, _ in run)
        if len(run) == 1:
            targets = f"({targets},)"
        lines = [f"{pad}{targets} = {self.struct_const(fmt)}.unpack_from(buf, pos)"]
        offset = 0
        for m, _, where in run:  # struct skips padding ("x") without looking at it
            padded = self.fmt(m)[1]
            if m.kind == "fopaque" and padded != m.size:
                lines.append(f"{pad}xdr.skip_padded(buf, pos + {offset}, {m.size}, {where!r})")
            offset += padded
        lines.append(f"{pad}pos += {size}")
        for m, var, where in run:
            if m.kind == "enum":
                lines.append(f"{pad}{var} = {self.py_type(m)}({var})")
            elif m.kind == "bool":
                lines.append(f"{pad}{var} = xdr.as_bool({var}, {where!r})")
        return lines

    def unpack(self, m: Model, var: str, where: str, pad: str) -> list[str]:
        if m.fixed:
            return self.unpack_run([(m, var, where)], pad)
        if m.kind in ("struct", "union"):
            return [f"{pad}{var}, pos = {self.py_type(m)}.unpack_from(buf, pos)"]
        if m.kind == "opaque":
            return [f"{pad}{var}, pos = xdr.unpack_opaque(buf, pos, {m.size}, {where!r})"]
        if m.kind == "string":
            raw = self.temp("raw")
            return [
                f"{pad}{raw}, pos = xdr.unpack_opaque(buf, pos, {m.size}, {where!r})",
                f"{pad}{var} = {raw}.decode('utf-8', 'surrogateescape')",
            ]
        assert m.elem is not None
        if m.kind == "optional":
            present = self.temp("present")
            return [
                f"{pad}{var}: {self.py_type(m)} = None",
                f"{pad}{present}, pos = xdr.unpack_flag(buf, pos, {where!r})",
                f"{pad}if {present}:",
                *self.unpack(m.elem, var, where, pad + "    "),
            ]
        count = self.temp("count")
        if m.kind == "array":
            lines = [f"{pad}{count}, pos = xdr.unpack_count(buf, pos, {m.size}, {where!r})"]
        else:
            lines = [f"{pad}{count} = {m.size}"]
        if m.elem.kind in PRIMITIVES and m.elem.kind != "bool":
            code, size = self.fmt(m.elem)
            call = f"xdr.unpack_values(buf, pos, {code!r}, {size}, {count})"
            return [*lines, f"{pad}{var}, pos = {call}"]
        item = self.temp("item")
        inline = self.inlinable(m.elem)
        if inline is not None:  # the element's own unpack_from, written out in the loop
            fields = self.struct_fields(inline)
            body = self.unpack_fields(fields, f"{item}_", pad + "    ")
            args = ", ".join(f"{item}_{fname}" for fname, _, _ in fields)
            body.append(f"{pad}    {item} = {self.py_type(m.elem)}({args})")
        else:
            body = self.unpack(m.elem, item, where + "[]", pad + "    ")
        return [
            *lines,
            f"{pad}{var}: {self.py_type(m)} = []",
            f"{pad}for _ in range({count}):",
            *body,
            f"{pad}    {var}.append({item})",
        ]

    # -- definitions

    def emit_enum(self, d: ast.Enum) -> list[str]:
        lines = ["", "", f"class {self.class_name(d.name)}(enum.IntEnum):"]
        for member in d.members:
            py_name = self.enum_members[member.name].split(".", 1)[1]
            lines.append(f"    {py_name} = {self.constants[member.name]}")
        lines += ["", ""]  # libvirt's names too, for those who search for them
        lines += [f"{m.name} = {self.enum_members[m.name]}" for m in d.members]
        return lines

    def struct_fields(self, d: ast.Struct) -> list[Field]:
        """(Python name, type, name in error messages) of each field."""
        return [(py_field(f.name), self.resolve(f), f"{d.name}.{f.name}") for f in d.fields]

    def inlinable(self, m: Model) -> ast.Struct | None:
        """The struct whose decoding is written out in an array loop (a call less per item)."""
        definition = self.types.get(m.ref or "") if m.kind == "struct" else None
        return definition if isinstance(definition, ast.Struct) else None

    def pack_fields(self, fields: list[Field], pad: str) -> list[str]:
        """Pack the fields of ``self`` in order, each run of fixed-size ones with one call."""
        lines: list[str] = []
        run: list[tuple[Model, str, str]] = []
        for fname, m, where in fields:
            if m.fixed:
                run.append((m, f"self.{fname}", where))
                continue
            if run:
                lines += self.pack_run(run, pad)
                run = []
            lines += self.pack(m, f"self.{fname}", where, pad)
        if run:
            lines += self.pack_run(run, pad)
        return lines

    def unpack_fields(self, fields: list[Field], prefix: str, pad: str) -> list[str]:
        """Unpack fields in order into variables ``prefix + name``."""
        lines: list[str] = []
        run: list[tuple[Model, str, str]] = []
        for fname, m, where in fields:
            if m.fixed:
                run.append((m, f"{prefix}{fname}", where))
                continue
            if run:
                lines += self.unpack_run(run, pad)
                run = []
            lines += self.unpack(m, f"{prefix}{fname}", where, pad)
        if run:
            lines += self.unpack_run(run, pad)
        return lines

    def emit_struct(self, d: ast.Struct) -> list[str]:
        name = self.class_name(d.name)
        fields = self.struct_fields(d)
        lines = ["", "", "@dataclass(slots=True)", f"class {name}(xdr.XdrStruct):"]
        lines += [f"    {fname}: {self.py_type(m)}" for fname, m, _ in fields] or ["    pass"]
        lines += ["", "    def pack_into(self, out: bytearray) -> None:"]
        lines += self.pack_fields(fields, "        ") or ["        pass"]
        lines += [
            "",
            "    @classmethod",
            "    def unpack_from(cls, buf: bytes, pos: int) -> tuple[Self, int]:",
        ]
        lines += self.unpack_fields(fields, "f_", "        ")
        args = ", ".join(f"f_{fname}" for fname, _, _ in fields)
        lines.append(f"        return cls({args}), pos")
        descriptors = "".join(
            f"\n        ({fname!r}, {self.descriptor(m)})," for fname, m, _ in fields
        )
        lines += [
            "",
            "",
            f"{name}.xdr_type = xdr.StructType(",
            f"    {d.name!r},",
            f"    {name},",
            f"    ({descriptors}\n    ),",
            ")",
        ]
        return lines

    def emit_union(self, d: ast.Union) -> list[str]:
        name = self.class_name(d.name)
        disc = self.resolve(d.discriminant)
        if disc.kind not in ("int", "unsigned int", "enum", "bool"):
            raise self.fail(d.token, "a union discriminant must be int, unsigned int, bool or enum")
        disc_name = py_field(d.discriminant.name)
        disc_fmt = self.fmt(disc)[0]
        arms: list[tuple[list[str], ast.Decl | None]] = [(c.labels, c.arm) for c in d.cases]
        value_types = sorted(
            {self.py_type(self.resolve(arm)) if arm else "None" for _, arm in arms}
            | ({self.py_type(self.resolve(d.default.arm)) if d.default.arm else "None"}
               if d.default else set())
        )
        lines = ["", "", "@dataclass(slots=True)", f"class {name}(xdr.XdrStruct):"]
        if "None" in value_types:  # None goes last, by convention
            value_types = [t for t in value_types if t != "None"] + ["None"]
        lines += [f"    {disc_name}: {self.py_type(disc)}", f"    value: {' | '.join(value_types)}"]
        disc_where = f"{d.name}.{d.discriminant.name}"
        disc_expr = f"self.{disc_name}"
        if disc.kind == "bool":
            disc_expr = f"xdr.check_bool({disc_expr}, {disc_where!r})"
        pack = [
            "",
            "    def pack_into(self, out: bytearray) -> None:",
            f"        d = {disc_expr}",
            "        value: Any = self.value",
        ]
        unpack = [
            "",
            "    @classmethod",
            "    def unpack_from(cls, buf: bytes, pos: int) -> tuple[Self, int]:",
            f"        (d,) = {self.struct_const(disc_fmt)}.unpack_from(buf, pos)",
            "        pos += 4",
        ]
        if disc.kind == "bool":
            unpack.append(f"        d = xdr.as_bool(d, {disc_where!r})")
        allowed = self.label_range(disc)
        descriptor_arms = []
        keyword_ = "if"
        for labels, arm in arms:
            values = [self.number(label, d.token) for label in labels]
            for label, value in zip(labels, values, strict=True):
                if value not in allowed:
                    raise self.fail(d.token, f"case {label} is not a valid {disc.ref or disc.kind}")
            test = f"d == {values[0]}" if len(values) == 1 else f"d in {tuple(values)}"
            where = f"{d.name}.{arm.name if arm else 'void'}"
            pack.append(f"        {keyword_} {test}:")
            unpack.append(f"        {keyword_} {test}:")
            keyword_ = "elif"
            disc_value = "d"
            if disc.kind == "enum":
                disc_value = f"{self.py_type(disc)}(d)"
                if len(labels) == 1 and labels[0] in self.enum_members:
                    disc_value = labels[0]  # the module-level alias: faster than Enum.MEMBER
            pack += self.pack_arm(disc_fmt, arm, where)
            unpack += self.unpack_arm(arm, where, disc_value)
            for value in values:
                descriptor_arms.append(
                    f"\n        {value}: ({arm.name if arm else 'void'!r}, "
                    f"{self.descriptor(self.resolve(arm)) if arm else 'xdr.VOID'}),"
                )
        default_descriptor = "None"
        if d.default is not None:
            arm = d.default.arm
            where = f"{d.name}.{arm.name if arm else 'void'}"
            pack.append("        else:" if arms else "        if True:")
            unpack.append("        else:" if arms else "        if True:")
            if disc.kind == "enum":
                pack.append(f"            xdr.check_enum(d, {self.py_type(disc)}, {disc_where!r})")
            pack += self.pack_arm(disc_fmt, arm, where)
            disc_value = f"{self.py_type(disc)}(d)" if disc.kind == "enum" else "d"
            unpack += self.unpack_arm(arm, where, disc_value)
            default_descriptor = (
                f"({arm.name if arm else 'void'!r}, "
                f"{self.descriptor(self.resolve(arm)) if arm else 'xdr.VOID'})"
            )
        else:
            pack += ["        else:", f"            raise xdr.unknown_arm({disc_where!r}, d)"]
            unpack.append(f"        raise xdr.unknown_arm({disc_where!r}, d)")
        lines += pack + unpack
        lines += [
            "",
            "",
            f"{name}.xdr_type = xdr.UnionType(",
            f"    {d.name!r},",
            f"    {name},",
            f"    {disc_name!r},",
            f"    {self.descriptor(disc)},",
            f"    {{{''.join(descriptor_arms)}\n    }},",
            f"    {default_descriptor},",
            ")",
        ]
        return lines

    def label_range(self, disc: Model) -> range | set[int]:
        """The values a case label of this discriminant may take."""
        if disc.kind == "enum":
            definition = self.types[disc.ref or ""]
            assert isinstance(definition, ast.Enum)
            return {self.constants[m.name] for m in definition.members}
        return {"int": range(-(2**31), 2**31), "unsigned int": range(2**32)}.get(
            disc.kind, range(2)
        )

    def pack_arm(self, disc_fmt: str, arm: ast.Decl | None, where: str) -> list[str]:
        pad = "            "
        if arm is None:
            return [f"{pad}out += {self.struct_const(disc_fmt)}.pack(d)"]
        m = self.resolve(arm)
        if m.fixed:
            fmt = disc_fmt + self.fmt(m)[0]
            arg = self.pack_arg(m, "value", where)
            return [f"{pad}out += {self.struct_const(fmt)}.pack(d, {arg})"]
        return [
            f"{pad}out += {self.struct_const(disc_fmt)}.pack(d)",
            *self.pack(m, "value", where, pad),
        ]

    def unpack_arm(self, arm: ast.Decl | None, where: str, disc_value: str) -> list[str]:
        pad = "            "
        if arm is None:
            return [f"{pad}return cls({disc_value}, None), pos"]
        value = self.temp("value")
        return [
            *self.unpack(self.resolve(arm), value, where, pad),
            f"{pad}return cls({disc_value}, {value}), pos",
        ]

    def emit_procedures(self, d: ast.Enum) -> list[str]:
        program = d.annotations.get("program")
        version = d.annotations.get("version")
        if not program or not version:
            raise self.fail(d.token, "@procedures needs @program=CONST and @version=CONST")
        lines = ["", "", "PROCEDURES: dict[int, ProcedureInfo] = {"]
        for member in d.members:
            a = member.annotations
            index = member.name.find("PROC_")
            if index < 0:
                raise self.fail(member.token, "procedure names must contain PROC_")
            base = member.name[index + 5 :].lower()
            py_member = self.enum_members[member.name]
            event = "event" in a
            args = a.get("args") or self.prefix + base + ("_msg" if event else "_args")
            ret = a.get("ret") or self.prefix + base + "_ret"
            api = a.get("api") or "vir" + camel(base)
            parts = [program, version, py_member, repr(api)]
            for key, type_name in (("args", args), ("ret", ret)):
                if type_name in self.types:
                    parts.append(f"{key}={self.class_name(type_name)}")
                elif key in a:
                    raise self.fail(member.token, f"unknown type {type_name!r}")
                elif event and key == "args":
                    raise self.fail(member.token, f"event without a {type_name} type")
            if event:
                parts.append("kind=ProcedureKind.EVENT")
            if "stream" in a:
                parts += ["kind=ProcedureKind.STREAM", f"stream={a['stream'] or 'both'!r}"]
            if "writes" in a:
                parts.append("writes=True")
            if "fds" in a:
                parts.append("fds=True")
            lines.append(f"    {py_member}: ProcedureInfo({', '.join(parts)}),")
        lines.append("}")
        return lines

    # -- the module

    def emit(self) -> str:
        body: list[str] = []
        procedure_enums = []
        for d in self.spec.definitions:
            if isinstance(d, ast.Const):
                body.append(f"{d.name} = {self.constants[d.name]}")
            elif isinstance(d, ast.Enum):
                body += self.emit_enum(d)
                if "procedures" in d.annotations:
                    procedure_enums.append(d)
            elif isinstance(d, ast.Struct):
                body += self.emit_struct(d)
            elif isinstance(d, ast.Union):
                body += self.emit_union(d)
            else:
                self.resolve(d.decl)  # typedefs are expanded where used; check them here
            if not isinstance(d, ast.Const):
                self.defined.add(d.decl.name if isinstance(d, ast.Typedef) else d.name)
        for d in procedure_enums:
            body += self.emit_procedures(d)
        kinds = {type(d) for d in self.spec.definitions}
        stdlib = ["import enum"] if ast.Enum in kinds else []
        stdlib += ["import struct"] if self.formats else []
        project = []
        if ast.Struct in kinds or ast.Union in kinds:
            stdlib.append("from dataclasses import dataclass")
            stdlib.append(f"from typing import {'Any, Self' if ast.Union in kinds else 'Self'}")
            project.append("from pyvirtrpc import xdr")
        if procedure_enums:
            uses_kind = "ProcedureKind." in "".join(body)
            names = "ProcedureInfo, ProcedureKind" if uses_kind else "ProcedureInfo"
            project.append(f"from pyvirtrpc.procedures import {names}")
        imports = stdlib + ([""] if stdlib and project else []) + project
        header = [
            f'"""Generated by pyvirtrpc.rpcgen from {self.source}. Do not edit."""',
            "",
            "from __future__ import annotations",
            "",
            *imports,
            "",
        ]
        if self.formats:
            formats = sorted(self.formats.items(), key=lambda kv: kv[1])
            header += [f"{name} = struct.Struct('>{fmt}')" for fmt, name in formats] + [""]
        text = "\n".join([*header, *body]) + "\n"
        return re.sub(r"\n{4,}", "\n\n\n", text)


def compile_spec(spec: ast.Specification, source: str) -> str:
    return Emitter(spec, source).emit()
