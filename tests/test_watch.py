"""The watcher against the mock libvirtd, in process (the mock's server runs in the test's
Trio loop on a unix socket, and can be stopped and started again on the same socket, with
the same hypervisor, as a restarted libvirtd keeps its running domains).
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from realdaemons import tool
from watchreports import Reports

from pyvirtrpc import open_connection
from pyvirtrpc.backends.mock import MockBackend, MockDaemon, MockHypervisor
from pyvirtrpc.cli.demo import thin_domain_xml
from pyvirtrpc.events import BlockThresholdEvent, DomainEventID
from pyvirtrpc.scaled import Percent
from pyvirtrpc.server import serve_unix
from pyvirtrpc.watch import (
    Level,
    Watcher,
    command_extender,
    format_size,
    format_summary,
    mock_grow,
    thin_disks,
)

MiB = 2**20
RUNNING, PAUSED = 1, 3


class Mock:
    """The mock's server in this Trio loop; ``stop()`` and ``start()`` it at will."""

    def __init__(self, nursery: trio.Nursery, folder: Path) -> None:
        self.nursery = nursery
        self.socket = folder / "sock"
        self.uri = f"test+unix:///default?socket={self.socket}"
        self.hv = MockHypervisor(test_domain=False, default_block_physical=64 * MiB)
        self.scope: trio.CancelScope | None = None
        self.stopped = trio.Event()

    async def start(self) -> None:
        self.scope = await self.nursery.start(self._serve)

    async def _serve(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(functools.partial(serve_unix, MockBackend(self.hv),
                                                          self.socket))
                    task_status.started(scope)
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        assert self.scope is not None
        self.stopped = trio.Event()
        self.scope.cancel()
        await self.stopped.wait()


@pytest.fixture
async def mock(tmp_path: Path) -> AsyncIterator[Mock]:
    async with trio.open_nursery() as nursery:
        served = Mock(nursery, tmp_path)
        await served.start()
        yield served
        nursery.cancel_scope.cancel()


class Guest:
    """The guest of a mock domain, writing to new space each time."""

    def __init__(self, mock: Mock, name: str = "vm1") -> None:
        self.hv, self.name, self.offset = mock.hv, name, 0

    def write(self, size: int = 4 * MiB) -> None:
        self.hv.write(self.name, "vda", self.offset, size)
        self.offset += size

    async def write_until(self, done: Callable[[], bool], size: int = 4 * MiB,
                          pause: float = 0.01) -> None:
        """Write until ``done()``; never while the threshold has fired and is not armed
        again (a guest must not outrun the watcher here, however slow the machine)."""
        while not done():
            with trio.fail_after(30):
                while not self.hv.disk(self.name, "vda").threshold:
                    await trio.sleep(0.005)
            self.write(size)
            await trio.sleep(pause)


def watcher(mock: Mock, reports: Reports, **options: object) -> Watcher:
    settings: dict[str, object] = {"level": Level(margin=16 * MiB), "extend": mock_grow,
                                   "chunk": 32 * MiB, "backoff": (0.05, 0.2)}
    settings.update(options)
    return Watcher(mock.uri, report=reports.append, **settings)  # type: ignore[arg-type]


async def test_writes_until_extended_n_times_no_event_missed(mock: Mock) -> None:
    reports = Reports()
    w = watcher(mock, reports)
    fired: list[BlockThresholdEvent] = []
    async with trio.open_nursery() as nursery, open_connection(mock.uri) as conn, \
            conn.domain_events(DomainEventID.BLOCK_THRESHOLD) as events:

        async def collect() -> None:
            async for event in events:
                assert isinstance(event, BlockThresholdEvent)
                fired.append(event)

        nursery.start_soon(collect)
        await nursery.start(w.run)
        assert reports.kinds("connected") and not w.disks  # no thin disk yet
        mock.hv.create_xml(thin_domain_xml("vm1"))  # started after the watcher
        await reports.wait("armed")
        await Guest(mock).write_until(lambda: w.summary()[0].extensions >= 5)
        await reports.wait("armed", 6)
        disk = mock.hv.disk("vm1", "vda")
        state = w.summary()[0]
        assert (state.mode, state.extensions, state.failures) == ("event", 5, 0)
        assert state.physical == disk.physical == 64 * MiB + 5 * 32 * MiB
        # every crossing the daemon reported (as vda and as vda[1]) was handled once
        crossings = [e for e in fired if e.dev == "vda"]
        assert len(crossings) == 5 == state.events == len(reports.kinds("event"))
        assert [e.dev for e in fired] == ["vda", "vda[1]"] * 5
        assert [r.data["threshold"] for r in reports.kinds("event")] == \
            [e.threshold for e in crossings] == [(64 + 32 * i - 16) * MiB for i in range(5)]
        # re-armed from each new size, 16 MiB below it
        assert [r.data["threshold"] for r in reports.kinds("armed")] == \
            [(64 + 32 * i - 16) * MiB for i in range(6)]
        assert disk.threshold == (64 + 5 * 32 - 16) * MiB
        assert mock.hv.by_name("vm1").state == RUNNING  # it never ran out of space
        mock.hv.destroy(mock.hv.by_name("vm1"))
        await reports.wait("stopped")
        assert not w.summary()[0].active
        nursery.cancel_scope.cancel()


async def test_daemon_restarted_mid_run(mock: Mock) -> None:
    reports = Reports()
    w = watcher(mock, reports)
    mock.hv.create_xml(thin_domain_xml("vm1"))
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
        guest = Guest(mock)
        await guest.write_until(lambda: w.summary()[0].extensions >= 2)
        await reports.wait("armed", 3)
        await mock.stop()
        await reports.wait("lost")
        # While the watcher is away the guest passes the threshold (nobody hears the event)
        before = mock.hv.disk("vm1", "vda")
        while mock.hv.disk("vm1", "vda").allocation <= before.threshold:
            guest.write()
        assert mock.hv.disk("vm1", "vda").threshold == 0  # fired, one-shot, unheard
        await mock.start()
        await reports.wait("connected", 2)
        await reports.wait("past")  # the check after reconnecting caught it
        await reports.wait("extended", 3)
        await guest.write_until(lambda: w.summary()[0].extensions >= 5)
        await reports.wait("armed", 6)
        nursery.cancel_scope.cancel()
    state = w.summary()[0]
    assert w.connections == 2
    assert (state.extensions, state.events, state.failures) == (5, 4, 0)
    assert state.physical == mock.hv.disk("vm1", "vda").physical == (64 + 5 * 32) * MiB
    assert mock.hv.by_name("vm1").state == RUNNING


async def test_percent_level_and_command_extension(mock: Mock, tmp_path: Path) -> None:
    """The extension as a user command: here the mockctl CLI, given the environment."""
    log = tmp_path / "extend.log"
    command = (f'{tool("pyvirtrpc")} mockctl -c "$URI" grow "$DOMAIN" "$DEV" "$NEW_PHYSICAL" '
               f'>/dev/null && echo "$DOMAIN $DEV $DISK_PATH $THRESHOLD $EXCESS $PHYSICAL '
               f'$NEW_PHYSICAL $CHUNK" >> {log}')
    reports = Reports()
    w = watcher(mock, reports, level=Level(percent=Percent(75_000)),
                extend=command_extender(command))
    mock.hv.create_xml(thin_domain_xml("vm1"))
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
        await Guest(mock).write_until(lambda: len(reports.kinds("extended")) >= 2)
        await reports.wait("armed", 3)
        nursery.cancel_scope.cancel()
    lines = log.read_text().splitlines()
    events = reports.kinds("event")
    assert lines == [
        f"vm1 vda /dev/demo-vg/vm1 {e.data['threshold']} {e.data['excess']} {p} {p + 32 * MiB}"
        f" {32 * MiB}" for e, p in zip(events, (64 * MiB, 96 * MiB), strict=True)
    ]
    assert [e.data["threshold"] for e in events] == [48 * MiB, 72 * MiB]  # 75 % of 64, 96
    assert w.summary()[0].physical == 128 * MiB


async def test_failed_extension_rearms_and_retries(mock: Mock) -> None:
    reports = Reports()
    w = watcher(mock, reports, extend=command_extender("echo no space in the VG >&2; exit 5"))
    mock.hv.create_xml(thin_domain_xml("vm1"))
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
        await Guest(mock).write_until(lambda: len(reports.kinds("failed")) >= 2, 1 * MiB)
        nursery.cancel_scope.cancel()
    failed = reports.kinds("failed")
    assert failed[0].message == ("extension failed: the extension command exited with "
                                 "status 5: no space in the VG")
    state = w.summary()[0]
    assert (state.extensions, state.physical) == (0, 64 * MiB)
    # Re-armed at the same level after each failure, so it fired again: one failure per
    # event (the guest may have written once more before the loop saw the second one,
    # and that event's extension may have been cut short by the cancellation).
    assert state.failures >= 2
    assert state.failures <= state.events <= state.failures + 1


async def test_full_disk_pauses_the_guest_and_the_watcher_resumes_it(mock: Mock) -> None:
    mock.hv.create_xml(thin_domain_xml("vm1"))
    with pytest.raises(Exception, match="needs"):
        mock.hv.write("vm1", "vda", 0, 64 * MiB)  # more than the 64 MiB device holds
    assert mock.hv.by_name("vm1").state == PAUSED
    mock.hv.write("vm1", "vda", 0, 60 * MiB)
    reports = Reports()
    w = watcher(mock, reports)
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)  # its first check finds the disk past the level
        await reports.wait("resumed")
        nursery.cancel_scope.cancel()
    assert [r.kind for r in reports][:6] == [
        "connected", "watching", "past", "extended", "resumed", "armed"]
    assert mock.hv.by_name("vm1").state == RUNNING


async def test_only_qcow2_disks_and_chosen_domains(mock: Mock) -> None:
    raw = thin_domain_xml("raw").replace("type='qcow2'", "type='raw'")
    assert thin_disks(raw) == []
    assert thin_disks(thin_domain_xml("vm1")) == [("vda", "/dev/demo-vg/vm1")]
    mock.hv.create_xml(raw)
    mock.hv.create_xml(thin_domain_xml("vm1"))
    mock.hv.create_xml(thin_domain_xml("vm2"))
    reports = Reports()
    w = watcher(mock, reports, domains={"vm2"})
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
        nursery.cancel_scope.cancel()
    assert [(d.domain, d.dev, d.armed) for d in w.summary()] == [("vm2", "vda", 48 * MiB)]


def test_sizes_levels_and_summary() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 196608, 64 * MiB, 3 * 2**40)] == [
        "0 B", "1023 B", "1.0 KiB", "192.0 KiB", "64.0 MiB", "3.0 TiB"]
    assert Level(margin=16 * MiB).threshold(64 * MiB) == 48 * MiB
    assert Level(percent=Percent(87_500)).threshold(64 * MiB) == 56 * MiB
    assert Level(percent=Percent(80_000)).describe(100 * MiB) == "80% of 100.0 MiB"
    with pytest.raises(ValueError):
        Level()
    state = Watcher("test:///default", level=Level(margin=1), extend=mock_grow)
    assert format_summary(state.summary()) == (
        "DOMAIN  DISK  MODE  EVENTS  POLLS  EXTENSIONS  FAILED  PHYSICAL\n")


# -------------------------------------------------------------- the CLI, on a mock daemon


def small_mock() -> MockDaemon:
    return MockDaemon(hypervisor=MockHypervisor(test_domain=False,
                                                default_block_physical=64 * MiB))


def test_watch_command_json_and_sigint() -> None:
    with small_mock() as daemon:
        daemon.call(lambda: daemon.hypervisor.create_xml(thin_domain_xml("vm1")))
        proc = subprocess.Popen(
            [tool("pyvirtrpc"), "watch", "-c", daemon.uri, "--margin", "16M", "--chunk", "32M",
             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        seen: list[dict[str, object]] = []
        watchdog = threading.Timer(30, proc.kill)  # a hang fails the test instead
        watchdog.start()

        def until(kind: str, count: int = 1) -> None:
            while sum(o["kind"] == kind for o in seen) < count:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, proc.stderr.read()  # type: ignore[union-attr]
                seen.append(json.loads(line))

        until("armed")
        for offset in range(0, 56 * MiB, 8 * MiB):
            daemon.call(daemon.hypervisor.write, "vm1", "vda", offset, 8 * MiB)
        until("armed", 2)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
        watchdog.cancel()
    assert (err, proc.returncode) == ("", 0)
    seen += [json.loads(line) for line in rest.splitlines()]
    kinds = [o["kind"] for o in seen]
    assert kinds[:7] == ["connected", "watching", "armed", "event", "extended", "armed",
                         "summary"]
    assert seen[3]["threshold"] == 48 * MiB and seen[4]["physical"] == 96 * MiB
    assert seen[-1] == {"kind": "summary", "domain": "vm1", "dev": "vda",
                        "path": "/dev/demo-vg/vm1", "mode": "event", "events": 1, "polls": 0,
                        "extensions": 1, "failures": 0, "capacity": 2**30,
                        "allocation": seen[-1]["allocation"], "physical": 96 * MiB}


def test_watch_command_text_table_after_duration() -> None:
    with small_mock() as daemon:
        daemon.call(lambda: daemon.hypervisor.create_xml(thin_domain_xml("vm1")))
        done = subprocess.run(
            [sys.executable, "-m", "pyvirtrpc", "watch", "-c", daemon.uri, "--percent", "50%",
             "--duration", "1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert " armed      vm1/vda  at 32.0 MiB (50% of 64.0 MiB); allocation " in lines[2]
    assert lines[-2:] == [
        "DOMAIN  DISK  MODE   EVENTS  POLLS  EXTENSIONS  FAILED  PHYSICAL",
        "vm1     vda   event       0      0           0       0  64.0 MiB (67108864)",
    ]
