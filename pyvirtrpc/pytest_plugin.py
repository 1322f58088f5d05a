"""A pytest plugin: a running mock libvirtd for any project's tests.

Installing pyvirtrpc registers it (entry point ``pyvirtrpc`` in group ``pytest11``; turn it
off with ``-p no:pyvirtrpc``). The ``mock_libvirtd`` fixture starts a fresh mock libvirtd
per test, in a background thread, on unix sockets in a temporary folder, and stops it
afterwards::

    def test_my_tool(mock_libvirtd):
        subprocess.run(["virsh", "-c", mock_libvirtd.uri, "list"], check=True)
        conn = libvirt.open(mock_libvirtd.uri)          # libvirt-python
        # pyvirtrpc: async with pyvirtrpc.open_connection(mock_libvirtd.uri) as conn: ...
        mock_libvirtd.start_thin_domain("vm1")          # qcow2 on a 64 MiB block device
        mock_libvirtd.write("vm1", "vda", 0, 32 << 20)  # the guest writes (may fire a
                                                        # block threshold)

The daemon starts as libvirt's ``test:///default`` does, with the running domain ``test``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from pyvirtrpc.backends.mock import MockDaemon, MockHypervisor, ThinDisk, WriteResult
from pyvirtrpc.cli.demo import thin_domain_xml
from pyvirtrpc.events import Event

__all__ = ["MockLibvirtd", "mock_libvirtd"]

T = TypeVar("T")


class MockLibvirtd:
    """What ``mock_libvirtd`` gives: where the daemon is, and handles to drive it.

    Every method runs in the daemon's thread (through :meth:`call`), so it is safe from
    the test's thread while clients are connected.
    """

    def __init__(self, daemon: MockDaemon) -> None:
        self.daemon = daemon

    @property
    def socket(self) -> str:
        """The read-write unix socket."""
        return str(self.daemon.socket)

    @property
    def ro_socket(self) -> str:
        """The read-only unix socket (as libvirtd's ``libvirt-sock-ro``)."""
        return str(self.daemon.ro_socket)

    @property
    def uri(self) -> str:
        """``test+unix:///default?socket=...``: for virsh -c, libvirt.open, pyvirtrpc."""
        return self.daemon.uri

    @property
    def ro_uri(self) -> str:
        return self.daemon.ro_uri

    @property
    def hypervisor(self) -> MockHypervisor:
        """The mock hypervisor; touch it only inside :meth:`call`."""
        return self.daemon.hypervisor

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` in the daemon's thread; its result or exception."""
        return self.daemon.call(function, *args)

    def start_thin_domain(self, name: str, physical: int = 64 << 20) -> None:
        """Start a transient domain ``name`` whose disk ``vda`` is a qcow2 image on a block
        device of ``physical`` bytes (1 GiB for the guest); a full device pauses it."""

        def start() -> None:
            self.hypervisor.create_xml(thin_domain_xml(name))
            self.hypervisor.grow(name, "vda", physical)

        self.call(start)

    def write(self, domain: str, dev: str, offset: int, length: int) -> WriteResult:
        """The guest of ``domain`` writes ``length`` bytes at guest ``offset`` of ``dev``;
        this fires the disk's block threshold if the write passes it."""
        return self.call(self.hypervisor.write, domain, dev, offset, length)

    def grow(self, domain: str, dev: str, physical: int) -> None:
        """Set a disk's physical size (as ``lvextend`` would)."""
        self.call(self.hypervisor.grow, domain, dev, physical)

    def disk(self, domain: str, dev: str) -> ThinDisk:
        """A snapshot of a disk (capacity, allocation, physical, threshold...)."""

        return self.call(lambda: copy.copy(self.hypervisor.disk(domain, dev)))

    def emit(self, event: Event) -> None:
        """Send any typed event (:mod:`pyvirtrpc.events`) to every subscribed client."""
        self.call(self.hypervisor.emit, event)

    def suspend(self, domain: str) -> None:
        """Pause a domain (a ``lifecycle`` Suspended event follows)."""
        self.call(lambda: self.hypervisor.suspend(self.hypervisor.by_name(domain), domain))

    def resume(self, domain: str) -> None:
        self.call(lambda: self.hypervisor.resume(self.hypervisor.by_name(domain), domain))

    def destroy(self, domain: str) -> None:
        self.call(lambda: self.hypervisor.destroy(self.hypervisor.by_name(domain)))


@pytest.fixture
def mock_libvirtd() -> Iterator[MockLibvirtd]:
    """A fresh mock libvirtd, running for the test (see :class:`MockLibvirtd`)."""
    with MockDaemon() as daemon:
        yield MockLibvirtd(daemon)
