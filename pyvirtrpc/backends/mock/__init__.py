"""The mock libvirtd: an in-memory hypervisor that virsh and libvirt-python accept.

    hypervisor = MockHypervisor()            # domain "test", running, as test:///default
    backend = MockBackend(hypervisor)
    await nursery.start(serve_unix, backend, "/tmp/sock", "/tmp/sock-ro")
    hypervisor.write("test", "vda", 32 << 20, 4 << 20)   # the guest writes

:class:`MockDaemon` runs the same in a background thread, for synchronous code.
"""

from __future__ import annotations

from pyvirtrpc.backends.base import BackendConnection, EmitEvent
from pyvirtrpc.backends.mock.connection import MockConnection
from pyvirtrpc.backends.mock.disk import CLUSTER_SIZE, NoSpace, ThinDisk, WriteResult
from pyvirtrpc.backends.mock.hypervisor import DomainState, MockDomain, MockHypervisor
from pyvirtrpc.errors import ErrorDomain, ErrorNumber, RemoteError
from pyvirtrpc.gen import mockctl, qemu, remote

__all__ = [
    "CLUSTER_SIZE",
    "DomainState",
    "MockBackend",
    "MockConnection",
    "MockDaemon",
    "MockDomain",
    "MockHypervisor",
    "NoSpace",
    "ThinDisk",
    "WriteResult",
]

# The names CONNECT_OPEN accepts (query parameters aside), and "" (no name: the default).
ACCEPTED_URIS = ("test:///default", "qemu:///system", "qemu:///session")


class MockBackend:
    """Serves a MockHypervisor (a new one, with domain "test", if none is given)."""

    programs = frozenset({remote.REMOTE_PROGRAM, qemu.QEMU_PROGRAM, mockctl.MOCKCTL_PROGRAM})

    def __init__(self, hypervisor: MockHypervisor | None = None) -> None:
        self.hypervisor = hypervisor if hypervisor is not None else MockHypervisor()

    async def open(self, name: str, readonly: bool, emit: EmitEvent) -> BackendConnection:
        uri = name or ACCEPTED_URIS[0]
        if uri.partition("?")[0] not in ACCEPTED_URIS:
            raise RemoteError.report(ErrorNumber.NO_CONNECT, ErrorDomain.NONE, name or "<null>")
        return MockConnection(self.hypervisor, uri, emit)


from pyvirtrpc.backends.mock.daemon import MockDaemon  # noqa: E402  (it needs MockBackend)
