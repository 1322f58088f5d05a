"""tools/record between real virsh and a real libvirtd, and the golden packets it captured."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from realdaemons import LibvirtdTestDriver, virsh

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
PREFIX = struct.Struct(">IIIiiIi")


@pytest.mark.libvirtd
def test_record_forwards_and_splits_packets(
    libvirtd_test: LibvirtdTestDriver, tmp_path: Path
) -> None:
    listen, out = tmp_path / "rec.sock", tmp_path / "out"
    options = ["--listen", listen, "--upstream", libvirtd_test.socket, "--out", out]
    recorder = subprocess.Popen(
        [sys.executable, ROOT / "tools" / "record", "--quiet", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recorder.stdout is not None
        assert recorder.stdout.readline().startswith("listening on")
        result = virsh(f"test+unix:///default?socket={listen}", "list", "--all")
        assert "test" in result.stdout
    finally:
        recorder.terminate()
        assert recorder.wait(timeout=10) == 0
    assert not listen.exists()
    packets = json.loads((out / "index.json").read_text())["packets"]
    procs = [(p["direction"], p["header"]["proc"], p["type_name"]) for p in packets]
    assert procs[:2] == [("c2s", 66, "CALL"), ("s2c", 66, "REPLY")]
    assert ("c2s", 1, "CALL") in procs
    assert procs[-1] == ("s2c", 2, "REPLY")  # CONNECT_CLOSE
    for entry in packets:
        data = (out / entry["file"]).read_bytes()
        assert PREFIX.unpack_from(data)[0] == len(data) == entry["length"]


def golden_entries() -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads((GOLDEN / "index.json").read_text())["packets"]
    return entries


@pytest.mark.parametrize("entry", golden_entries(), ids=lambda e: str(e["file"]))
def test_golden_file_matches_its_index_entry(entry: dict[str, object]) -> None:
    data = (GOLDEN / str(entry["file"])).read_bytes()
    length, prog, vers, proc, type_, serial, status = PREFIX.unpack_from(data)
    assert length == len(data) == entry["length"]
    assert entry["header"] == {
        "prog": prog,
        "vers": vers,
        "proc": proc,
        "type": type_,
        "serial": serial,
        "status": status,
    }


def test_every_golden_file_is_indexed() -> None:
    indexed = {str(e["file"]) for e in golden_entries()}
    assert indexed == {path.name for path in GOLDEN.glob("*.bin")}
