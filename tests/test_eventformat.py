"""pyvirtrpc.eventformat prints what virsh prints.

Three sources of truth:
- tests/data/eventformat/virsh-events.json (tools/capture-eventformat): what real virsh
  printed for real events from the test driver and from qemu, with the packets it got;
  decoding those packets and formatting them must give virsh's bytes exactly;
- a real virsh and test-driver libvirtd, live: lifecycle events, ``--list``, the end texts;
- virsh 9.0's format strings (tools/virsh-*.c) for the events neither daemon can make.
"""

from __future__ import annotations

import datetime
import json
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from realdaemons import LibvirtdTestDriver, tool, virsh, virsh_env

from pyvirtrpc import events as ev
from pyvirtrpc.eventformat import (
    DOMAIN_EVENT_IDS,
    DOMAIN_EVENT_NAMES,
    EndReason,
    domain_event_id,
    event_json,
    event_name,
    format_disconnect,
    format_event,
    format_summary,
    format_timestamp,
)
from pyvirtrpc.events import DomainEventID, DomainLifecycle
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import TypedParamType as T
from pyvirtrpc.typedparams import encode_params

DATA = Path(__file__).parent / "data" / "eventformat" / "virsh-events.json"
CAPTURES: list[dict[str, Any]] = json.loads(DATA.read_text())["captures"]
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\+0000: ", re.MULTILINE)

TEST_UUID = uuid.UUID("6695eb01-f6a4-8304-79aa-97f2502e193f").bytes
TEST = wire.NonnullDomain("test", TEST_UUID, 1)


def virsh_millis(text: str) -> list[int]:
    """The times of virsh's ``--timestamp`` prefixes, as milliseconds since the epoch."""
    stamps = []
    for seconds, millis in TIMESTAMP.findall(text):
        when = datetime.datetime.strptime(seconds, "%Y-%m-%d %H:%M:%S")
        stamps.append(int(when.replace(tzinfo=datetime.UTC).timestamp()) * 1000 + int(millis))
    return stamps


def expected_output(events: list[ev.Event], end: EndReason, stamps: list[int] | None) -> str:
    """What virsh prints for these events, then its summary and its after-command blank line."""
    times: list[int | None] = list(stamps) if stamps is not None else [None] * len(events)
    lines = [format_event(e, t) for e, t in zip(events, times, strict=True)]
    return "".join(lines) + format_summary(len(events), end) + "\n"


# ------------------------------------------------------------ captured from real virsh


@pytest.mark.parametrize("capture", CAPTURES, ids=[c["name"] for c in CAPTURES])
def test_same_bytes_as_virsh_for_real_packets(capture: dict[str, Any]) -> None:
    received = [
        ev.decode_event(e["proc"], bytes.fromhex(e["payload"]))[1] for e in capture["events"]
    ]
    assert received, "every capture holds events"
    # Without --loop virsh prints the first event only, and stops.
    shown = received if "--loop" in capture["command"] else received[:1]
    stamps = virsh_millis(capture["stdout"]) if "--timestamp" in capture["command"] else None
    assert capture["stdout"] == expected_output(shown, capture["end"], stamps)


def test_captures_cover_the_real_events() -> None:
    seen = {
        event_name(ev.decode_event(e["proc"], bytes.fromhex(e["payload"]))[1])
        + (f" ({c['command'][3]})" if c["command"][3] != "event" else "")
        for c in CAPTURES
        for e in c["events"]
    }
    assert {
        "lifecycle",
        "metadata-change",
        "block-threshold",
        "tunable",
        "block-job",
        "block-job-2",
        "job-completed",
        "migration-iteration",
        "reboot",
        "lifecycle (net-event)",
        "lifecycle (pool-event)",
        "refresh (pool-event)",
        "lifecycle (nodedev-event)",
    } <= seen


def test_lifecycle_objects_give_the_captured_lines() -> None:
    """LifecycleEvents made by hand, for the actions of the capture, give virsh's lines."""
    capture = next(c for c in CAPTURES if c["name"] == "domain")
    L = DomainLifecycle
    actions = [
        (L.SUSPENDED, 0),  # suspend: Paused
        (L.RESUMED, 0),  # resume: Unpaused
        (L.STOPPED, 1),  # destroy: Destroyed
        (L.STARTED, 0),  # start: Booted
        (L.DEFINED, 1),  # define an existing domain: Updated
    ]
    lines = capture["stdout"].splitlines(keepends=True)
    assert [format_event(ev.LifecycleEvent(TEST, e, d)) for e, d in actions] == lines[:5]
    # undefine of the running domain, then destroy; a new domain defined
    t2 = wire.NonnullDomain("t2", bytes(16), -1)
    assert format_event(ev.LifecycleEvent(TEST, L.UNDEFINED, 0)) in lines
    assert format_event(ev.LifecycleEvent(TEST, L.STOPPED, 4)) in lines  # save: Saved
    assert format_event(ev.LifecycleEvent(t2, L.DEFINED, 0)) in lines  # Added


def test_disconnect_line_as_virsh_printed_it() -> None:
    capture = next(c for c in CAPTURES if c["name"] == "domain-disconnected")
    # Through the recorder, the daemon's death reached virsh as an I/O error (reason 0).
    first = capture["stderr"].splitlines(keepends=True)[0]
    assert first == format_disconnect(0, "{uri}")
    assert capture["returncode"] == 1


def test_block_threshold_as_in_real_libvirt_notes() -> None:
    thin1 = wire.NonnullDomain("thin1", bytes(16), 1)
    event = ev.BlockThresholdEvent(thin1, "vda", "IMG/top.qcow2", 20971520, 1376256)
    assert (
        format_event(event)
        == "event 'block-threshold' for domain 'thin1': dev: vda(IMG/top.qcow2) 20971520 1376256\n"
    )
    indexed = ev.BlockThresholdEvent(thin1, "vda[1]", None, 20971520, 1376256)
    assert format_event(indexed).endswith(": dev: vda[1](<null>) 20971520 1376256\n")


# ------------------------------------------------------------------ live, real virsh


class Watcher:
    """``virsh event ...`` in the background, its output lines collected as they come."""

    def __init__(self, uri: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [tool("virsh"), "-c", uri, "event", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=virsh_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_line(self, timeout: float) -> str | None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        self.out.append(line)
        return line

    def finish(self, timeout: float = 20) -> tuple[str, str]:
        """Wait for virsh to exit; all it printed (stdout, stderr)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=timeout)
        while self.next_line(0) is not None:
            pass
        assert self.proc.stderr is not None
        return "".join(self.out), self.proc.stderr.read()


def sync(watcher: Watcher, act: Callable[[], object]) -> int:
    """Repeat ``act`` until the watcher prints a line (it has registered); lines printed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        act()
        if watcher.next_line(0.5) is not None:
            extra = 0
            while watcher.next_line(0.3) is not None:  # an earlier act's late line
                extra += 1
            return 1 + extra
    raise AssertionError("virsh event never printed a line")


@pytest.fixture
def private_daemon(
    libvirtd_test_factory: Callable[[], LibvirtdTestDriver],
) -> Iterator[LibvirtdTestDriver]:
    yield libvirtd_test_factory()


@pytest.mark.libvirtd
@pytest.mark.parametrize("timestamps", [False, True], ids=["plain", "timestamp"])
def test_live_lifecycle_events_print_as_virsh(
    private_daemon: LibvirtdTestDriver, timestamps: bool, tmp_path: Path
) -> None:
    uri = private_daemon.uri
    args = ["--all", "--loop", *(["--timestamp"] if timestamps else [])]
    watcher = Watcher(uri, *args)
    probes = sync(watcher, lambda: virsh(uri, "desc", "test", "--live", "--title", "probe"))
    xml = tmp_path / "test.xml"
    xml.write_text(virsh(uri, "dumpxml", "test").stdout)
    L = DomainLifecycle
    expected: list[ev.Event] = [ev.MetadataChangeEvent(TEST, 1, None)] * probes
    for action, event, detail in [
        (["suspend", "test"], L.SUSPENDED, 0),
        (["resume", "test"], L.RESUMED, 0),
        (["destroy", "test"], L.STOPPED, 1),
        (["start", "test"], L.STARTED, 0),
        (["define", str(xml)], L.DEFINED, 1),
        (["undefine", "test"], L.UNDEFINED, 0),
    ]:
        virsh(uri, *action)
        expected.append(ev.LifecycleEvent(TEST, event, detail))
        assert watcher.next_line(10) is not None, f"no event for {action}"
    watcher.proc.send_signal(signal.SIGINT)
    stdout, stderr = watcher.finish()
    assert stderr == ""
    assert watcher.proc.returncode == 0
    stamps = virsh_millis(stdout) if timestamps else None
    assert stdout == expected_output(expected, "interrupt", stamps)
    if stamps:  # virsh's clock is UTC and ours reads it back as UTC
        assert all(abs(s - time.time() * 1000) < 120_000 for s in stamps)


@pytest.mark.libvirtd
def test_live_event_list_and_unknown_name(libvirtd_test: LibvirtdTestDriver) -> None:
    listed = virsh(libvirtd_test.uri, "event", "--list").stdout
    assert listed == "".join(f"{name}\n" for name in DOMAIN_EVENT_NAMES.values()) + "\n"
    refused = virsh(libvirtd_test.uri, "event", "--event", "nonsense", check=False)
    with pytest.raises(ValueError) as error:
        domain_event_id("nonsense")
    assert refused.stderr == f"error: {error.value}\n"
    # virsh knows no write-threshold; we take it as block-threshold
    assert (
        "unknown event type write-threshold"
        in virsh(libvirtd_test.uri, "event", "--event", "write-threshold", check=False).stderr
    )
    assert domain_event_id("write-threshold") is DomainEventID.BLOCK_THRESHOLD


@pytest.mark.libvirtd
def test_live_timeout_without_events(libvirtd_test: LibvirtdTestDriver) -> None:
    result = virsh(libvirtd_test.uri, "event", "--all", "--timeout", "1", check=False)
    assert result.stdout == format_summary(0, "timeout") + "\n"
    assert result.returncode == 1  # no event: failure


@pytest.mark.libvirtd
def test_live_disconnect_at_end_of_file(private_daemon: LibvirtdTestDriver) -> None:
    uri = private_daemon.uri
    watcher = Watcher(uri, "--all", "--loop")
    count = sync(watcher, lambda: virsh(uri, "desc", "test", "--live", "--title", "probe"))
    private_daemon.kill()
    stdout, stderr = watcher.finish()
    assert stdout == expected_output([ev.MetadataChangeEvent(TEST, 1, None)] * count, "done", None)
    assert stderr.startswith(format_disconnect(1, uri) or "")
    assert watcher.proc.returncode == 1


# ----------------------------------------------------- virsh's format strings, by hand


def params() -> list[wire.TypedParam]:
    return encode_params(
        [
            ("cputune.vcpu_quota", T.LLONG, -1),
            ("cputune.shares", T.ULLONG, 1024),
            ("ratio", T.DOUBLE, 0.25),
            ("big", T.DOUBLE, 1.5e20),
            ("flag", T.BOOLEAN, True),
            ("disk", T.STRING, "vda"),
            ("count", T.INT, -3),
            ("ucount", T.UINT, 7),
        ]
    )


GRAPHICS = ev.GraphicsEvent(
    TEST,
    0,
    wire.DomainEventGraphicsAddress(0, "127.0.0.1", "5900"),
    wire.DomainEventGraphicsAddress(1, "::1", "40000"),
    "vnc",
    [
        wire.DomainEventGraphicsIdentity("x509dname", "CN=a"),
        wire.DomainEventGraphicsIdentity("saslUsername", "bob"),
    ],
)
NET = wire.NonnullNetwork("default", bytes(range(16)))
POOL = wire.NonnullStoragePool("default-pool", bytes(16))
NODEDEV = wire.NonnullNodeDevice("scsi_host12")
SECRET = wire.NonnullSecret(uuid.UUID("0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f").bytes, 1, "vol")
D = "event '{}' for domain 'test'"

FROM_SOURCE: list[tuple[ev.Event, str]] = [
    (
        ev.LifecycleEvent(TEST, 6, 2),
        D.format("lifecycle") + ": Shutdown Finished after host request\n",
    ),
    (ev.LifecycleEvent(TEST, 8, 1), D.format("lifecycle") + ": Crashed Crashloaded\n"),
    (ev.LifecycleEvent(TEST, 3, 8), D.format("lifecycle") + ": Suspended Post-copy Error\n"),
    (ev.LifecycleEvent(TEST, 3, 9), D.format("lifecycle") + ": Suspended unknown\n"),
    (ev.LifecycleEvent(TEST, 9, 0), D.format("lifecycle") + ": unknown unknown\n"),
    (ev.LifecycleEvent(TEST, -1, 0), D.format("lifecycle") + ": unknown unknown\n"),
    (ev.RebootEvent(TEST), D.format("reboot") + "\n"),
    (ev.RtcChangeEvent(TEST, -3600), D.format("rtc-change") + ": -3600\n"),
    (ev.WatchdogEvent(TEST, 6), D.format("watchdog") + ": inject-nmi\n"),
    (ev.WatchdogEvent(TEST, 7), D.format("watchdog") + ": unknown\n"),
    (
        ev.IoErrorEvent(TEST, "/img", "virtio-disk0", 1),
        D.format("io-error") + ": /img (virtio-disk0) pause\n",
    ),
    (
        GRAPHICS,
        D.format("graphics")
        + ": connect local[IPv4 127.0.0.1 5900] remote[IPv6 ::1 40000] vnc\n"
        + "\tx509dname=CN=a\n\tsaslUsername=bob\n",
    ),
    (
        ev.IoErrorReasonEvent(TEST, "/img", "ide0-0-0", 2, "enospc"),
        D.format("io-error-reason") + ": /img (ide0-0-0) report due to enospc\n",
    ),
    (ev.ControlErrorEvent(TEST), D.format("control-error") + "\n"),
    (
        ev.BlockJobEvent(TEST, "/img", 4, 3),
        D.format("block-job") + ": Active Block Commit for /img ready\n",
    ),
    (
        ev.BlockJobEvent(TEST, "/img", 6, 4),
        D.format("block-job") + ": Unknown job for /img unknown\n",
    ),
    (
        ev.BlockJob2Event(TEST, "vda", 2, 2),
        D.format("block-job-2") + ": Block Copy for vda canceled\n",
    ),
    (
        ev.DiskChangeEvent(TEST, None, "/new.iso", "ide0-1-0", 0),
        D.format("disk-change") + " disk ide0-1-0: <null> -> /new.iso: changed\n",
    ),
    (
        ev.DiskChangeEvent(TEST, "/old.iso", None, "ide0-1-0", 1),
        D.format("disk-change") + " disk ide0-1-0: /old.iso -> <null>: dropped\n",
    ),
    (ev.TrayChangeEvent(TEST, "ide0-1-0", 0), D.format("tray-change") + " disk ide0-1-0: opened\n"),
    (ev.TrayChangeEvent(TEST, "ide0-1-0", 1), D.format("tray-change") + " disk ide0-1-0: closed\n"),
    (ev.PMWakeupEvent(TEST, 0), D.format("pm-wakeup") + "\n"),
    (ev.PMSuspendEvent(TEST, 0), D.format("pm-suspend") + "\n"),
    (ev.BalloonChangeEvent(TEST, 524288), D.format("balloon-change") + ": 524288KiB\n"),
    (ev.PMSuspendDiskEvent(TEST, 0), D.format("pm-suspend-disk") + "\n"),
    (ev.DeviceRemovedEvent(TEST, "virtio-disk1"), D.format("device-removed") + ": virtio-disk1\n"),
    (
        ev.TunableEvent(TEST, params()),
        D.format("tunable")
        + ":\n\tcputune.vcpu_quota: -1\n\tcputune.shares: 1024\n\tratio: 0.25\n\tbig: 1.5e+20\n"
        + "\tflag: 1\n\tdisk: vda\n\tcount: -3\n\tucount: 7\n",
    ),
    (
        ev.AgentLifecycleEvent(TEST, 1, 2),
        D.format("agent-lifecycle") + ": state: 'connected' reason: 'channel event'\n",
    ),
    (
        ev.AgentLifecycleEvent(TEST, 3, 3),
        D.format("agent-lifecycle") + ": state: 'unsupported value' reason: 'unsupported value'\n",
    ),
    (ev.DeviceAddedEvent(TEST, "net1"), D.format("device-added") + ": net1\n"),
    (ev.MigrationIterationEvent(TEST, 3), D.format("migration-iteration") + ": iteration: '3'\n"),
    (
        ev.JobCompletedEvent(TEST, params()[:2]),
        D.format("job-completed") + ":\n\tcputune.vcpu_quota: -1\n\tcputune.shares: 1024\n",
    ),
    (ev.JobCompletedEvent(TEST, []), D.format("job-completed") + ":\n"),
    (ev.DeviceRemovalFailedEvent(TEST, "dimm0"), D.format("device-removal-failed") + ": dimm0\n"),
    (
        ev.MetadataChangeEvent(TEST, 2, "http://x/"),
        D.format("metadata-change") + ": type element, uri http://x/\n",
    ),
    (
        ev.MetadataChangeEvent(TEST, 3, None),
        D.format("metadata-change") + ": type unsupported value, uri <null>\n",
    ),
    (
        ev.BlockThresholdEvent(TEST, "sda[3]", None, 1, 0),
        D.format("block-threshold") + ": dev: sda[3](<null>) 1 0\n",
    ),
    (
        ev.MemoryFailureEvent(TEST, 1, 2, 3),
        D.format("memory-failure")
        + ":\nrecipient: guest\naction: fatal\nflags:\n\taction required: 1\n\trecursive: 1\n",
    ),
    (
        ev.MemoryFailureEvent(TEST, 2, 4, 2),
        D.format("memory-failure") + ":\nrecipient: unsupported value\naction: unsupported value\n"
        "flags:\n\taction required: 0\n\trecursive: 1\n",
    ),
    (
        ev.MemoryDeviceSizeChangeEvent(TEST, "virtiomem0", 1048576),
        D.format("memory-device-size-change") + ":\nalias: virtiomem0\nsize: 1048576\n",
    ),
    (ev.NetworkLifecycleEvent(NET, 3, 0), "event 'lifecycle' for network default: Stopped\n"),
    (ev.NetworkLifecycleEvent(NET, 4, 0), "event 'lifecycle' for network default: unknown\n"),
    (
        ev.StoragePoolLifecycleEvent(POOL, 5, 0),
        "event 'lifecycle' for storage pool default-pool: Deleted\n",
    ),
    (ev.StoragePoolRefreshEvent(POOL), "event 'refresh' for storage pool default-pool\n"),
    (
        ev.NodeDeviceLifecycleEvent(NODEDEV, 3, 0),
        "event 'lifecycle' for node device scsi_host12: Undefined\n",
    ),
    (ev.NodeDeviceUpdateEvent(NODEDEV), "event 'update' for node device scsi_host12\n"),
    (
        ev.SecretLifecycleEvent(SECRET, 1, 0),
        "event 'lifecycle' for secret 0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f: Undefined\n",
    ),
    (
        ev.SecretValueChangedEvent(SECRET),
        "event 'value-changed' for secret 0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f\n",
    ),
]


@pytest.mark.parametrize(("event", "text"), FROM_SOURCE, ids=lambda x: type(x).__name__)
def test_format_strings_of_virsh(event: ev.Event, text: str) -> None:
    assert format_event(event) == text


def test_every_event_class_has_a_text_and_json() -> None:
    covered = {type(e) for e, _ in FROM_SOURCE}
    assert covered == set(ev.WIRE) - {ev.ConnectionClosedEvent}
    for event, _ in FROM_SOURCE:
        json.dumps(event_json(event, 0))  # serialisable
    with pytest.raises(TypeError):
        format_event(ev.ConnectionClosedEvent(1))


def test_timestamp_prefixes_the_first_line_only() -> None:
    millis = 1714564800123  # 2024-05-01 12:00:00.123 UTC
    assert format_timestamp(millis) == "2024-05-01 12:00:00.123+0000"
    assert format_timestamp(0) == "1970-01-01 00:00:00.000+0000"
    assert format_timestamp(5) == "1970-01-01 00:00:00.005+0000"
    text = format_event(GRAPHICS, millis)
    assert text == "2024-05-01 12:00:00.123+0000: " + format_event(GRAPHICS)
    assert text.count("+0000") == 1


def test_summary_and_disconnect_texts() -> None:
    assert format_summary(3, "done") == "events received: 3\n"
    assert format_summary(0, "timeout") == "event loop timed out\nevents received: 0\n"
    assert format_summary(1, "interrupt") == "event loop interrupted\nevents received: 1\n"
    uri = "qemu:///system"
    assert format_disconnect(0, uri) == f"error: Disconnected from {uri} due to I/O error\n"
    assert format_disconnect(1, uri) == f"error: Disconnected from {uri} due to end of file\n"
    assert format_disconnect(2, uri) == (
        f"error: Disconnected from {uri} due to keepalive timeout\n"
    )
    assert format_disconnect(3, uri) is None
    assert format_disconnect(4, uri) == "error: unknown reason\n"


# ----------------------------------------------------------------------- names, JSON


def test_names_and_ids() -> None:
    assert list(DOMAIN_EVENT_NAMES) == list(DomainEventID)
    for event_id, name in DOMAIN_EVENT_NAMES.items():
        assert domain_event_id(name) is event_id
    assert DOMAIN_EVENT_IDS["write-threshold"] is DomainEventID.BLOCK_THRESHOLD
    assert len(DOMAIN_EVENT_IDS) == 28
    with pytest.raises(ValueError, match=r"^unknown event type Lifecycle$"):
        domain_event_id("Lifecycle")


def test_json_of_a_block_threshold() -> None:
    dom = wire.NonnullDomain("thin1", TEST_UUID, 3)
    event = ev.BlockThresholdEvent(dom, "vda[1]", "/img/top.qcow2", 20971520, 327680)
    assert event_json(event, 1714564800123) == {
        "timestamp": "2024-05-01T12:00:00.123Z",
        "event": "block-threshold",
        "domain": {"name": "thin1", "uuid": "6695eb01-f6a4-8304-79aa-97f2502e193f", "id": 3},
        "fields": {
            "dev": "vda[1]",
            "path": "/img/top.qcow2",
            "threshold": 20971520,
            "excess": 327680,
        },
    }


def test_json_spells_numbers_and_decodes_parameters() -> None:
    lifecycle = event_json(ev.LifecycleEvent(TEST, 5, 1))
    assert "timestamp" not in lifecycle
    assert lifecycle["event"] == "lifecycle"
    assert lifecycle["fields"] == {
        "event": 5,
        "event_text": "Stopped",
        "detail": 1,
        "detail_text": "Destroyed",
    }
    tunable = event_json(ev.TunableEvent(TEST, params()))["fields"]["params"]
    assert tunable["flag"] is True
    assert tunable["cputune.shares"] == 1024
    graphics = event_json(GRAPHICS)["fields"]
    assert graphics["phase_text"] == "connect"
    assert graphics["remote"] == {
        "family": 1,
        "family_text": "IPv6",
        "node": "::1",
        "service": "40000",
    }
    assert graphics["subject"] == [
        {"type": "x509dname", "name": "CN=a"},
        {"type": "saslUsername", "name": "bob"},
    ]
    assert event_json(ev.SecretValueChangedEvent(SECRET)) == {
        "event": "value-changed",
        "secret": {
            "uuid": "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f",
            "usage_type": 1,
            "usage_id": "vol",
        },
        "fields": {},
    }
    assert event_json(ev.NodeDeviceUpdateEvent(NODEDEV))["node_device"] == {"name": "scsi_host12"}
    assert event_json(ev.ConnectionClosedEvent(2)) == {
        "event": "connection-closed",
        "fields": {"reason": 2, "reason_text": "keepalive"},
    }
