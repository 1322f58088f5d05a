"""Fixtures and helpers for tests that point real libvirt clients at the mock libvirtd.

- ``mock_daemon``: a :class:`MockDaemon` (the mock in a thread of the test process) on
  fresh sockets, stopped after the test.
- ``libvirt_events``: libvirt-python's default event loop, registered once and run in a
  thread (libvirt wants it registered before the first connection is opened).
- :class:`VirshEvents`: a ``virsh event --loop`` process whose lines can be awaited.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from realdaemons import tool, virsh, virsh_env

from pyvirtrpc.backends.mock import MockDaemon

WAIT = 20.0

THIN_XML = """\
<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/{name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


@pytest.fixture
def mock_daemon() -> Iterator[MockDaemon]:
    with MockDaemon() as daemon:
        yield daemon


_event_loop_started = False


@pytest.fixture(scope="session")
def libvirt_events() -> Any:
    """The libvirt module, with its default event loop implementation running."""
    import libvirt

    global _event_loop_started
    if not _event_loop_started:
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True
    return libvirt


def registrations(daemon: MockDaemon) -> int:
    """Event registrations the mock holds for all its clients."""
    return daemon.call(lambda: sum(len(c.session.registrations) for c in daemon.server.clients))


def wait_for(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class VirshEvents:
    """``virsh -c URI event --loop ARGS...``, its output lines collected by a thread."""

    def __init__(self, uri: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [tool("virsh"), "-c", uri, "event", "--loop", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=virsh_env(),
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, count: int, timeout: float = WAIT) -> list[str]:
        """Wait until ``count`` lines were printed in all; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"virsh event printed only {self.lines}") from None
            if line is None:
                raise AssertionError(f"virsh event exited after {self.lines}")
            if line:
                self.lines.append(line)
        return self.lines

    def settle(self, quiet: float = 0.5) -> list[str]:
        """Collect lines until none came for ``quiet`` seconds."""
        while True:
            try:
                line = self._queue.get(timeout=quiet)
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            if line:
                self.lines.append(line)

    def wait_listening(self, uri: str, domain: str = "test", tries: int = 30) -> int:
        """Suspend and resume ``domain`` until its "Resumed" event is printed; returns the
        number of lines printed by then.

        virsh event registers the lifecycle event first, then the others one call after
        another before it waits: once a lifecycle event shows, the rest are moments away.
        This is how to know it listens to a libvirtd, which cannot be asked.
        """
        resumed = f"event 'lifecycle' for domain '{domain}': Resumed Unpaused"
        for _ in range(tries):
            virsh(uri, "suspend", domain)
            virsh(uri, "resume", domain)
            if resumed in self.settle(0.5):
                return len(self.lines)
        raise AssertionError(f"virsh event printed only {self.lines}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
