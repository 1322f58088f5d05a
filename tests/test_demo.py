"""``pyvirtrpc demo``, the README's main job, run as a new user runs it: installed into a
fresh virtual environment from a copy of this checkout, started by its console script,
in an empty folder, with no arguments. And ``--connect`` against real libvirtd with qemu
and against a mock libvirtd started with ``pyvirtrpc mock``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realdaemons import LibvirtdQemuSession, tool

ROOT = Path(__file__).resolve().parent.parent
CLOCK = r"\d\d:\d\d:\d\d\.\d{3}  "
MiB = 2**20


def check_demo_output(stdout: str, extensions: int = 4) -> list[str]:
    lines = stdout.splitlines()
    kinds = [line[14:24].strip() for line in lines if re.match(CLOCK, line)]
    assert kinds.count("event") >= extensions - 1
    assert kinds.count("extended") == extensions
    assert kinds.count("armed") >= extensions  # the first extension may come before any arming
    assert "write" in kinds and "connected" in kinds and "failed" not in kinds
    assert re.fullmatch(
        CLOCK + rf"done       the guest wrote [\d.]+ MiB; the watcher grew its disk "
        rf"{extensions} times, 0 failed", lines[-1])
    header = lines.index("DOMAIN          DISK  MODE   EVENTS  POLLS  EXTENSIONS  FAILED  PHYSICAL")
    assert lines[header - 1] == ""
    return lines[header + 1].split()


@pytest.mark.slow
def test_demo_from_a_fresh_install(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        ".venv"))
    venv = tmp_path / "venv"
    # Built as pip builds any package (setuptools from the index, in isolation); its
    # dependencies (trio...) are the ones this Python has, so only the build needs the index.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
                    str(source)], check=True,
                   env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
    installed = subprocess.run(
        [venv / "bin" / "python", "-c", "import pyvirtrpc; print(pyvirtrpc.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert installed.startswith(str(venv)), installed  # this copy, not the checkout
    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    demo = subprocess.run(
        [venv / "bin" / "pyvirtrpc", "demo"], capture_output=True, text=True, timeout=60,
        cwd=home, env={"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"},
    )
    elapsed = time.monotonic() - started
    assert (demo.stderr, demo.returncode) == ("", 0)
    row = check_demo_output(demo.stdout)
    assert row == ["pyvirtrpc-demo", "vda", "event", "4", "0", "4", "0", "192.0", "MiB",
                   "(201326592)"]
    lines = demo.stdout.splitlines()
    assert re.fullmatch(CLOCK + r"demo       a mock libvirtd listens on /\S+/libvirt-sock "
                        r"\(in this process\)", lines[0])
    assert any("armed      pyvirtrpc-demo/vda  at 48.0 MiB (16.0 MiB below 64.0 MiB); "
               "allocation " in line for line in lines)
    assert any("extended   pyvirtrpc-demo/vda  160.0 MiB -> 192.0 MiB by mock grow in " in line
               for line in lines)
    assert elapsed < 15, f"the demo took {elapsed:.1f} s"


@pytest.mark.libvirtd
@pytest.mark.qemu
def test_demo_against_real_qemu(libvirtd_qemu: LibvirtdQemuSession) -> None:
    demo = subprocess.run(
        [tool("pyvirtrpc"), "demo", "--connect", libvirtd_qemu.uri, "--margin", "8M",
         "--chunk", "16M", "--write", "4M", "--extensions", "3"],
        capture_output=True, text=True, timeout=180,
    )
    assert (demo.stderr, demo.returncode) == ("", 0)
    row = check_demo_output(demo.stdout, 3)
    assert row[:7] == ["pyvirtrpc-demo", "vda", "event", row[3], "0", "3", "0"]
    assert "started domain pyvirtrpc-demo (qemu, no OS) on " in demo.stdout
    assert "by command in" in demo.stdout
    listed = subprocess.run([tool("virsh"), "-c", libvirtd_qemu.uri, "list", "--all",
                             "--name"], capture_output=True, text=True, check=True)
    assert "pyvirtrpc-demo" not in listed.stdout  # the transient domain is gone


def test_demo_against_a_running_mock(tmp_path: Path) -> None:
    socket = tmp_path / "mock.sock"
    mock = subprocess.Popen([tool("pyvirtrpc"), "mock", "--socket", str(socket)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert mock.stderr is not None
        assert "listening on" in mock.stderr.readline()
        demo = subprocess.run(
            [tool("pyvirtrpc"), "demo", "--connect", f"test+unix:///default?socket={socket}",
             "--json", "--extensions", "2"], capture_output=True, text=True, timeout=60)
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait(timeout=20)
    assert (demo.stderr, demo.returncode) == ("", 0)
    assert '"kind": "summary"' in demo.stdout and '"extensions": 2' in demo.stdout
