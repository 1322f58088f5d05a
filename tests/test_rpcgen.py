"""The .x compiler: errors located as file:line:col, every construct of the dialect, the
annotations, the procedure tables, and the freshness check of the committed output."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from strategies import ROOT, SAMPLE_X, sample_module

from pyvirtrpc import xdr
from pyvirtrpc.gen import qemu, remote
from pyvirtrpc.procedures import ProcedureInfo, ProcedureKind, lookup
from pyvirtrpc.rpcgen import ParseError, compile_file, compile_spec, parse
from pyvirtrpc.rpcgen.parser import tokenize

SAMPLE = sample_module()


def compile_text(text: str, filename: str = "broken.x") -> str:
    return compile_spec(parse(text, filename), filename)


# ------------------------------------------------------------------------ errors

PROCEDURES = "const P = 1;\nenum p {{ /* @procedures @program=P @version=P */\n  {}\n}};"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("const A = ;", "1:11", "expected a number or constant, found ';'"),
        ("const A = 1;\n  $", "2:3", "unexpected '$'"),
        ("struct a {\n  int x;\n}", "3:2", "expected ';', found 'end of file'"),
        ("struct a {\n    string s;\n};", "2:5", "string needs a size"),
        ("struct a {\n    int x;\n    foo y;\n};", "3:5", "unknown type 'foo'"),
        ("struct a { int x<NOPE>; };", "1:12", "unknown constant 'NOPE'"),
        ("struct a { int x; };\nstruct a { int y; };", "2:8", "a is defined twice"),
        ("union u switch (hyper h) { case 1: void; };", "1:7", "discriminant must be"),
        (
            "enum e { A = 1 };\nunion u switch (e d) { case 2: void; };",
            "2:7",
            "case 2 is not a valid e",
        ),
        ("union u switch (unsigned d) {\ncase -1: void; };", "1:7", "not a valid unsigned int"),
        ("union u switch (bool d) { case 2: void; };", "1:7", "case 2 is not a valid bool"),
        ("union u switch (int d) { cas 1: void; };", "1:26", "expected 'case' or 'default'"),
        ("struct a { string *s; };", "1:12", "a string needs <N> or <>"),
        ("struct a { string s[3]; };", "1:12", "a string needs <N> or <>"),
        ("typedef void;", "1:1", "typedef of void"),
        ("struct a { b x; };\nstruct b { int y; };", "1:12", "b is used before its definition"),
        ("struct t {\n  int v;\n  t *next;\n};", "3:3", "t is used before its definition"),
        ("strukt a { };", "1:1", "expected a definition, found 'strukt'"),
        ("enum p { /* @procedures */ P_PROC_A = 1 };", "1:6", "@procedures needs @program"),
        (PROCEDURES.format("X_A = 1"), "3:3", "procedure names must contain PROC_"),
        (PROCEDURES.format("X_PROC_A = 1 /* @event */"), "3:3", "event without a a_msg type"),
        (PROCEDURES.format("X_PROC_A = 1 /* @args=nope */"), "3:3", "unknown type 'nope'"),
    ],
)
def test_errors_name_file_line_and_column(text: str, where: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        compile_text(text)
    exc = info.value
    assert str(exc).startswith(f"broken.x:{where}: ")
    assert message in str(exc)
    assert (exc.filename, f"{exc.line}:{exc.col}") == ("broken.x", where)


def test_error_positions_count_lines_inside_comments() -> None:
    text = "/* one\n   two\n   three */ const A = 1;\n// four\n%pass through\nconst B = @;"
    with pytest.raises(ParseError, match=r"^broken.x:6:11: unexpected '@'"):
        compile_text(text)


# --------------------------------------------------------------------- constructs


def test_constants() -> None:
    assert SAMPLE.SAMPLE_MAX == 8
    assert SAMPLE.SAMPLE_PROGRAM == 0x12345678
    assert SAMPLE.SAMPLE_VERSION == SAMPLE.SAMPLE_TWO == 1
    assert SAMPLE.SAMPLE_OCTAL == 8  # 010, as in C
    assert SAMPLE.SAMPLE_NEGATIVE == -3


def test_enums_and_their_libvirt_names() -> None:
    assert [(m.name, m.value) for m in SAMPLE.Color] == [("RED", 0), ("GREEN", 1), ("BLUE", 16)]
    assert SAMPLE.SAMPLE_COLOR_BLUE is SAMPLE.Color.BLUE
    # @member-prefix strips exactly that prefix; members may be constants and negative
    assert [(m.name, m.value) for m in SAMPLE.Shape] == [("SQUARE", 1), ("CIRCLE", 8), ("LINE", -3)]
    assert SAMPLE.SAMPLE_SHAPE_LINE is SAMPLE.Shape.LINE


def test_struct_fields_and_their_types() -> None:
    t = SAMPLE.Everything.xdr_type
    assert t.name == "sample_everything" and t.cls is SAMPLE.Everything
    point, value = SAMPLE.Point.xdr_type, SAMPLE.Value.xdr_type
    assert dict(t.fields) == {
        "name": xdr.StringType(8),  # a typedef of string<SAMPLE_MAX>
        "nickname": xdr.OptionalType(xdr.StringType(8)),  # a typedef of a typedef
        "uuid": xdr.FixedOpaqueType(16),
        "blob": xdr.OpaqueType(8),
        "three": xdr.FixedOpaqueType(3),
        "flag": xdr.BOOL,
        "f": xdr.FLOAT,
        "d": xdr.DOUBLE,
        "color": xdr.EnumType(SAMPLE.Color),
        "point": point,
        "maybe_point": xdr.OptionalType(point),
        "points": xdr.ArrayType(point, 8),
        "numbers": xdr.ArrayType(xdr.INT, xdr.UNLIMITED),
        "fixed_numbers": xdr.FixedArrayType(xdr.INT, 2),
        "names": xdr.ArrayType(xdr.StringType(8), 8),
        "colors": xdr.ArrayType(xdr.EnumType(SAMPLE.Color), 8),
        "flags": xdr.ArrayType(xdr.BOOL, 8),
        "value": value,
        "number": SAMPLE.Number.xdr_type,
        "values": xdr.ArrayType(value, 2),
    }
    assert dict(SAMPLE.Point.xdr_type.fields) == {
        "x": xdr.INT,
        "y": xdr.UINT,
        "z": xdr.HYPER,
        "w": xdr.UHYPER,
    }
    corners = dict(SAMPLE.Corners.xdr_type.fields)
    assert corners["out_"] == xdr.ArrayType(xdr.UHYPER, xdr.UNLIMITED)
    assert corners["text"] == xdr.StringType(xdr.UNLIMITED)
    assert corners["few"] == xdr.ArrayType(point, 1)  # typedef'd array, constant limit
    assert corners["pair"] == xdr.FixedArrayType(point, 2)
    assert corners["uuids"] == xdr.ArrayType(xdr.FixedOpaqueType(16), 2)
    assert SAMPLE.Empty.xdr_type.fields == ()
    assert SAMPLE.Empty().encode() == b""


def test_python_names() -> None:
    # the @prefix is stripped and names are camel-cased; Python keywords and the names the
    # generated methods use get a trailing underscore
    names = [f for f, _ in SAMPLE.Corners.xdr_type.fields]
    assert names[:4] == ["class_", "buf_", "pos_", "out_"]
    assert SAMPLE.PingArgs.xdr_type.name == "sample_ping_args"
    assert SAMPLE.Point.__slots__ == ("x", "y", "z", "w")
    assert remote.NonnullDomain.xdr_type.name == "remote_nonnull_domain"
    assert remote.DomainEventBlockThresholdMsg.__slots__ == (
        "callbackID",
        "dom",
        "dev",
        "path",
        "threshold",
        "excess",
    )


def test_unions() -> None:
    value, number = SAMPLE.Value.xdr_type, SAMPLE.Number.xdr_type
    assert (value.discriminant, value.discriminant_type) == ("kind", xdr.EnumType(SAMPLE.Color))
    assert dict(value.arms) == {
        0: ("red", xdr.INT),
        1: ("green", xdr.StringType(8)),
        16: ("void", xdr.VOID),
    }
    assert value.default is None
    assert dict(number.arms) == {1: ("small", xdr.DOUBLE), 2: ("small", xdr.DOUBLE)}
    assert number.default == ("other", SAMPLE.Point.xdr_type)
    assert SAMPLE.ByFlag.xdr_type.discriminant_type == xdr.BOOL
    assert dict(SAMPLE.ByFlag.xdr_type.arms) == {1: ("label", xdr.StringType(8))}
    assert SAMPLE.ByUnsigned.xdr_type.discriminant_type == xdr.UINT
    assert SAMPLE.OnlyDefault.xdr_type.arms == {}
    # shared labels decode to the enum member, bool discriminants to bool
    shape = SAMPLE.ByShape.decode(struct.pack(">ii", 8, 0))
    assert shape.shape is SAMPLE.Shape.CIRCLE and shape.value is None
    flag = SAMPLE.ByFlag.decode(struct.pack(">I", 0))
    assert flag.on is False and flag.value is None
    assert SAMPLE.Number(7, SAMPLE.Point(1, 2, 3, 4)).encode() == struct.pack(
        ">iiIqQ", 7, 1, 2, 3, 4
    )


def test_fixed_size_runs_are_packed_by_one_precompiled_struct() -> None:
    text = compile_file(str(SAMPLE_X))
    point = text[text.index("class Point(") : text.index("Point.xdr_type =")]
    assert "out += _S_iIqQ.pack(self.x, self.y, self.z, self.w)" in point
    assert "_S_iIqQ.unpack_from(buf, pos)" in point
    assert "_S_iIqQ = struct.Struct('>iIqQ')" in text
    assert isinstance(SAMPLE._S_iIqQ, struct.Struct)
    # three[3] flag f d color: one run, the opaque's padding included
    assert "_S_3s1xIfdi.pack(" in text
    # a struct element of an array is decoded in the loop, without a call per item
    bag = text[text.index("class Bag(") : text.index("Bag.xdr_type =")]
    assert "Everything.unpack_from" not in bag and "Empty()" in bag
    assert ".pack_into(out)" in bag  # encoding calls each item's own method
    threshold = Path(remote.__file__).read_text(encoding="utf-8")
    msg = threshold[threshold.index("class DomainEventBlockThresholdMsg(") :]
    assert "out += _S_QQ.pack(self.threshold, self.excess)" in msg[: msg.index(".xdr_type =")]


def test_output_is_deterministic_and_names_its_source() -> None:
    first, second = compile_file(str(SAMPLE_X)), compile_file(str(SAMPLE_X), "data/sample.x")
    assert first == compile_file(str(SAMPLE_X))
    assert second.startswith('"""Generated by pyvirtrpc.rpcgen from data/sample.x. Do not edit."""')


# --------------------------------------------------------------------- annotations


def test_annotations_are_words_with_at_in_comments() -> None:
    text = "/* mail me@example.com @flag @key=value */ const A = 1;\n// @other\nconst B = 2;"
    tokens, annotations = tokenize(text, "a.x")
    assert annotations == {1: {"flag": "", "key": "value"}, 2: {"other": ""}}
    assert [t.text for t in tokens] == [
        "const",
        "A",
        "=",
        "1",
        ";",
        "const",
        "B",
        "=",
        "2",
        ";",
        "",
    ]


def test_procedure_table_of_the_sample() -> None:
    p, s = SAMPLE.Procedure, SAMPLE
    program, version = s.SAMPLE_PROGRAM, s.SAMPLE_VERSION
    table = s.PROCEDURES
    assert table == {
        p.PING: ProcedureInfo(
            program, version, p.PING, "virPing", args=s.PingArgs, ret=s.PingRet, writes=True
        ),
        p.TICK: ProcedureInfo(
            program, version, p.TICK, "virTick", args=s.TickMsg, kind=ProcedureKind.EVENT
        ),
        p.NOTHING: ProcedureInfo(program, version, p.NOTHING, "virNothing"),
        p.DOWNLOAD: ProcedureInfo(
            program,
            version,
            p.DOWNLOAD,
            "virSampleFetch",
            kind=ProcedureKind.STREAM,
            stream="read",
        ),
        p.SEND_FILES: ProcedureInfo(
            program,
            version,
            p.SEND_FILES,
            "virSendFiles",
            args=s.Point,
            ret=s.Empty,
            writes=True,
            fds=True,
        ),
        p.WATCH: ProcedureInfo(
            program, version, p.WATCH, "virWatch", kind=ProcedureKind.STREAM, stream="both"
        ),
    }
    assert s.SAMPLE_PROC_WATCH is p.WATCH == 6
    assert s.PROCEDURES[p.PING].name == "PING"


@pytest.mark.parametrize(
    ("number", "api", "args", "ret", "kind", "writes"),
    [
        (1, "virConnectOpen", remote.ConnectOpenArgs, None, "call", False),
        (66, "virAuthList", None, remote.AuthListRet, "call", False),
        (16, "virDomainGetInfo", remote.DomainGetInfoArgs, remote.DomainGetInfoRet, "call", False),
        (
            344,
            "virConnectGetAllDomainStats",
            remote.ConnectGetAllDomainStatsArgs,
            remote.ConnectGetAllDomainStatsRet,
            "call",
            False,
        ),
        (386, "virDomainSetBlockThreshold", remote.DomainSetBlockThresholdArgs, None, "call", True),
        (12, "virDomainDestroy", remote.DomainDestroyArgs, None, "call", True),
        (
            318,
            "virDomainEventCallbackLifecycle",
            remote.DomainEventCallbackLifecycleMsg,
            None,
            "event",
            False,
        ),
        (
            385,
            "virDomainEventBlockThreshold",
            remote.DomainEventBlockThresholdMsg,
            None,
            "event",
            False,
        ),
        (
            362,
            "virConnectEventConnectionClosed",
            remote.ConnectEventConnectionClosedMsg,
            None,
            "event",
            False,
        ),
    ],
)
def test_procedure_table_rows_of_remote(
    number: int, api: str, args: object, ret: object, kind: str, writes: bool
) -> None:
    info = lookup(remote.REMOTE_PROGRAM, number)
    assert info is not None and info is remote.PROCEDURES[remote.Procedure(number)]
    assert (info.program, info.version, int(info.number)) == (0x20008086, 1, number)
    assert (info.api, info.args, info.ret, info.kind, info.writes) == (api, args, ret, kind, writes)


def test_the_51_event_procedures_of_libvirt_9() -> None:
    events = sorted(n for n, info in remote.PROCEDURES.items() if info.kind == ProcedureKind.EVENT)
    legacy = [107, 169, 170, 171, 172, 173, 195, 224, 241, 248, 268, 269, 270, 276, 292, 311]
    callback = [*range(318, 334), 339, 346, 348, 354, 359, 363, 367, 379, 385, 423, 438]
    others = [315, 362, 370, 373, 376, 377, 382, 383]
    assert events == sorted(legacy + callback + others)
    assert len(events) == 51
    for n in events:
        args = remote.PROCEDURES[n].args
        assert args is not None and args.xdr_type.name.endswith("_msg"), n
    monitor_event = lookup(qemu.QEMU_PROGRAM, 6)
    assert monitor_event is not None and monitor_event.kind == ProcedureKind.EVENT
    assert lookup(remote.REMOTE_PROGRAM, 999999) is None


# ----------------------------------------------------------- regen and the command line


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_regen_check_passes_on_the_committed_tree() -> None:
    result = run("tools/regen", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_regen_check_fails_when_stale_and_regen_fixes_it(tmp_path: Path) -> None:
    for folder in ("protocol", "pyvirtrpc", "tools"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    stale = tmp_path / "pyvirtrpc" / "gen" / "keepalive.py"
    stale.write_text(stale.read_text(encoding="utf-8") + "# edited by hand\n", encoding="utf-8")
    result = run("tools/regen", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert "pyvirtrpc/gen/keepalive.py" in result.stdout + result.stderr
    assert run("tools/regen", cwd=tmp_path).returncode == 0
    assert stale.read_text(encoding="utf-8") == (ROOT / "pyvirtrpc/gen/keepalive.py").read_text(
        encoding="utf-8"
    )
    assert run("tools/regen", "--check", cwd=tmp_path).returncode == 0


def test_python_m_rpcgen(tmp_path: Path) -> None:
    source = str(SAMPLE_X)
    result = run("-m", "pyvirtrpc.rpcgen", source)
    assert result.returncode == 0, result.stderr
    assert result.stdout == compile_file(source)
    out = tmp_path / "sample.py"
    assert run("-m", "pyvirtrpc.rpcgen", source, "-o", str(out)).returncode == 0
    assert out.read_text(encoding="utf-8") == result.stdout
    assert run("-m", "pyvirtrpc.rpcgen", source, "-o", str(out), "--check").returncode == 0
    out.write_text("stale", encoding="utf-8")
    stale = run("-m", "pyvirtrpc.rpcgen", source, "-o", str(out), "--check")
    assert stale.returncode == 1 and "is stale" in stale.stderr
    broken = tmp_path / "broken.x"
    broken.write_text("struct a {\n  int x\n};\n", encoding="utf-8")
    failed = run("-m", "pyvirtrpc.rpcgen", str(broken))
    assert failed.returncode == 1
    assert failed.stderr == f"rpcgen: {broken}:3:1: expected ';', found '}}'\n"
