"""``pyvirtrpc events`` and ``pyvirtrpc threshold`` side by side with real virsh.

Each live test runs ``virsh event ...`` and ``pyvirtrpc events ...`` with the same options
against one real test-driver libvirtd, waits until both have registered (counted in the
daemon's own debug log of dispatched calls), makes things happen, and requires the same
stdout, stderr and exit status from both. ``threshold`` is checked against real qemu
(block.0.threshold in the domain stats) and against virsh's refusals.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from realdaemons import LibvirtdQemuSession, LibvirtdTestDriver, tool, virsh, virsh_env

from pyvirtrpc.eventformat import DOMAIN_EVENT_NAMES
from pyvirtrpc.gen.remote import Procedure

pytestmark = pytest.mark.libvirtd

REGISTER = f"proc={int(Procedure.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)}\n"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: ", re.MULTILINE)
MiB = 2**20


def pyvirtrpc_cmd() -> list[str]:
    return [tool("pyvirtrpc")]


class Daemon:
    """A private test-driver libvirtd that logs every call it dispatches."""

    def __init__(self, daemon: LibvirtdTestDriver, log: Path) -> None:
        self.daemon, self.log, self.uri = daemon, log, daemon.uri

    def registrations(self) -> int:
        try:
            return sum(line.endswith(REGISTER) for line in self.log.open())
        except FileNotFoundError:
            return 0

    def wait_registrations(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.registrations() < count:
            assert time.monotonic() < deadline, f"{self.registrations()} of {count} registered"
            time.sleep(0.05)
        time.sleep(0.3)  # the log line comes as the call is dispatched: let it finish


@pytest.fixture
def daemon(
    libvirtd_test_factory: Callable[[], LibvirtdTestDriver],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Daemon]:
    log = tmp_path / "dispatch.log"
    with monkeypatch.context() as env:  # only libvirtd gets these (virsh reads them too)
        env.setenv("LIBVIRT_LOG_FILTERS", "1:rpc.netserverprogram")
        env.setenv("LIBVIRT_LOG_OUTPUTS", f"1:file:{log}")
        started = libvirtd_test_factory()
    yield Daemon(started, log)


def listen(uri: str, *args: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """``virsh event ARGS`` and ``pyvirtrpc events ARGS``, both running."""
    def start(cmd: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=virsh_env())

    return (start([tool("virsh"), "-c", uri, "event"]),
            start([*pyvirtrpc_cmd(), "events", "-c", uri]))


def outcome(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str, int]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return stdout, stderr, proc.returncode


def same(procs: tuple[subprocess.Popen[str], subprocess.Popen[str]]) -> tuple[str, str, int]:
    theirs, ours = (outcome(p) for p in procs)
    assert ours == theirs
    return ours


def test_all_events_in_a_loop_as_virsh(daemon: Daemon, tmp_path: Path) -> None:
    uri = daemon.uri
    procs = listen(uri, "--all", "--loop", "--timeout", "6")
    daemon.wait_registrations(2 * len(DOMAIN_EVENT_NAMES))
    xml = tmp_path / "test.xml"
    xml.write_text(virsh(uri, "dumpxml", "test").stdout)
    for action in (["suspend", "test"], ["resume", "test"], ["desc", "test", "--live",
                   "--title", "hello"], ["destroy", "test"], ["start", "test"],
                   ["define", str(xml)]):
        virsh(uri, *action)
    stdout, stderr, status = same(procs)
    assert stdout.startswith("event 'lifecycle' for domain 'test': Suspended Paused\n")
    assert "event 'metadata-change' for domain 'test': type title, uri <null>\n" in stdout
    assert stdout.endswith("event loop timed out\nevents received: 6\n\n")
    assert (stderr, status) == ("", 0)


def test_one_shot_domain_filter_and_timestamps_as_virsh(daemon: Daemon) -> None:
    uri = daemon.uri
    one_shot = listen(uri, "--event", "lifecycle")
    filtered = listen(uri, "--domain", "test", "--event", "lifecycle", "--loop",
                      "--timeout", "4", "--timestamp")
    daemon.wait_registrations(4)
    virsh(uri, "suspend", "test")
    virsh(uri, "resume", "test")
    assert same(one_shot) == (
        "event 'lifecycle' for domain 'test': Suspended Paused\nevents received: 1\n\n", "", 0)
    theirs, ours = (outcome(p) for p in filtered)
    # The times differ by the few milliseconds between the two processes; the rest must not.
    assert len(TIMESTAMP.findall(ours[0])) == 2
    assert (TIMESTAMP.sub("T: ", ours[0]), *ours[1:]) == (TIMESTAMP.sub("T: ", theirs[0]),
                                                         *theirs[1:])
    assert TIMESTAMP.sub("", ours[0]) == (
        "event 'lifecycle' for domain 'test': Suspended Paused\n"
        "event 'lifecycle' for domain 'test': Resumed Unpaused\n"
        "event loop timed out\nevents received: 2\n\n")


def test_no_event_and_refusals_as_virsh(daemon: Daemon) -> None:
    for args in (["--all", "--timeout", "1"], ["--list"], [], ["--all", "--event", "reboot"],
                 ["--list", "--all"], ["--event", "nonsense"], ["--all", "--timeout", "0"],
                 ["--all", "--timeout", "x"], ["--domain", "nosuch", "--all"]):
        theirs, ours = (outcome(p) for p in listen(daemon.uri, *args))
        assert ours == theirs, args
    assert outcome(listen(daemon.uri, "--all", "--timeout", "1")[1])[2] == 1


def test_daemon_killed_as_virsh(daemon: Daemon) -> None:
    uri = daemon.uri
    procs = listen(uri, "--all", "--loop")
    daemon.wait_registrations(2 * len(DOMAIN_EVENT_NAMES))
    virsh(uri, "suspend", "test")
    time.sleep(0.5)
    daemon.daemon.kill()
    stdout, stderr, status = same(procs)
    assert stdout == ("event 'lifecycle' for domain 'test': Suspended Paused\n"
                      "events received: 1\n\n")
    assert stderr == (f"error: Disconnected from {uri} due to end of file\n"
                      "error: internal error: client socket is closed\n")
    assert status == 1


def test_interrupted_and_write_threshold_name(daemon: Daemon) -> None:
    uri = daemon.uri
    procs = listen(uri, "--event", "lifecycle", "--loop")
    daemon.wait_registrations(2)
    virsh(uri, "suspend", "test")
    time.sleep(0.5)
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    assert same(procs) == ("event 'lifecycle' for domain 'test': Suspended Paused\n"
                           "event loop interrupted\nevents received: 1\n\n", "", 0)
    # write-threshold is ours (virsh refuses it): a block-threshold registration
    ours = subprocess.run([*pyvirtrpc_cmd(), "events", "-c", uri, "--event", "write-threshold",
                           "--timeout", "1", "-q"], capture_output=True, text=True)
    assert (ours.stdout, ours.stderr, ours.returncode) == (
        "event loop timed out\nevents received: 0\n", "", 1)


def test_json_lines(daemon: Daemon) -> None:
    uri = daemon.uri
    proc = subprocess.Popen([*pyvirtrpc_cmd(), "events", "-c", uri, "--all", "--loop", "--json",
                             "--timestamp", "--timeout", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    daemon.wait_registrations(len(DOMAIN_EVENT_NAMES))
    virsh(uri, "suspend", "test")
    virsh(uri, "desc", "test", "--live", "--title", "hi")
    stdout, stderr, status = outcome(proc)
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert (stderr, status) == ("", 0)
    assert [(o["event"], o["domain"]["name"]) for o in lines] == [
        ("lifecycle", "test"), ("metadata-change", "test")]
    assert lines[0]["fields"] == {"event": 3, "detail": 0, "event_text": "Suspended",
                                  "detail_text": "Paused"}
    assert lines[0]["domain"]["uuid"] == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["timestamp"])


# ----------------------------------------------------------------------- threshold


def threshold(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*pyvirtrpc_cmd(), "threshold", "-c", uri, *args],
                          capture_output=True, text=True, env=virsh_env())


def test_threshold_refusals_as_virsh(daemon: Daemon) -> None:
    uri = daemon.uri
    # The test driver has no block threshold: the same error as virsh's.
    theirs = virsh(uri, "domblkthreshold", "test", "vda", "1M", check=False)
    ours = threshold(uri, "test", "vda", "1M")
    assert (ours.stderr, ours.returncode) == (theirs.stderr, theirs.returncode) == (
        "error: this function is not supported by the connection driver: "
        "virDomainSetBlockThreshold\n", 1)
    for bad in ("12X", "-1"):
        theirs = virsh(uri, "domblkthreshold", "test", "vda", bad, check=False)
        ours = threshold(uri, "test", "vda", bad)
        assert (ours.stderr, ours.returncode) == (theirs.stderr, theirs.returncode), bad
    refused = threshold(uri, "test", "vda", "100.5%")
    assert (refused.stderr, refused.returncode) == (
        "error: Percentage '100.5%' for <threshold> option is above 100%\n", 1)
    refused = threshold(uri, "nosuch", "vda", "1M")
    assert refused.stderr.startswith("error: failed to get domain 'nosuch'\n")


@pytest.mark.qemu
def test_threshold_bytes_and_percent_on_qemu(libvirtd_qemu: LibvirtdQemuSession) -> None:
    uri = libvirtd_qemu.uri
    xml, _ = libvirtd_qemu.make_thin_domain("pyvirtrpc-cli-threshold")
    path = Path(libvirtd_qemu.dir, "cli-threshold.xml")
    path.write_text(xml)
    virsh(uri, "define", str(path))
    virsh(uri, "start", "pyvirtrpc-cli-threshold")
    try:
        def armed() -> int:
            stats = virsh(uri, "domstats", "--block", "pyvirtrpc-cli-threshold").stdout
            found = re.search(r"block\.0\.threshold=(\d+)", stats)
            return int(found.group(1)) if found else 0

        set_bytes = threshold(uri, "pyvirtrpc-cli-threshold", "vda", "20MiB")
        assert (set_bytes.stdout, set_bytes.returncode) == (f"{20 * MiB}\n", 0)
        assert armed() == 20 * MiB
        set_percent = threshold(uri, "pyvirtrpc-cli-threshold", "vda", "87.5%")
        assert set_percent.returncode == 0, set_percent.stderr
        assert int(set_percent.stdout) == 64 * MiB * 875 // 1000 == armed()
        assert threshold(uri, "pyvirtrpc-cli-threshold", "vda", "0").stdout == "0\n"
        assert armed() == 0
    finally:
        virsh(uri, "destroy", "pyvirtrpc-cli-threshold", check=False)
        virsh(uri, "undefine", "pyvirtrpc-cli-threshold", check=False)


def test_default_uri_from_the_environment_as_virsh(daemon: Daemon) -> None:
    env = {**virsh_env(), "LIBVIRT_DEFAULT_URI": daemon.uri}
    theirs, ours = (
        subprocess.run([*cmd, "--all", "--timeout", "1"], capture_output=True, text=True,
                       env=env)
        for cmd in ([tool("virsh"), "event"], [*pyvirtrpc_cmd(), "events"]))
    assert (ours.stdout, ours.stderr, ours.returncode) == (
        theirs.stdout, theirs.stderr, theirs.returncode) == (
        "event loop timed out\nevents received: 0\n\n", "", 1)
