"""The mock libvirtd in a background thread, for synchronous programs and tests.

    with MockDaemon() as daemon:
        conn = libvirt.open(daemon.uri)                    # or virsh -c daemon.uri
        daemon.call(daemon.hypervisor.write, "test", "vda", 0, 1 << 20)

The server runs its own Trio loop in the thread. The hypervisor belongs to that thread:
touch it only through :meth:`MockDaemon.call`, which runs a function there and returns
its result (or raises its exception).

With libvirt-python in the same process, mind its garbage: freeing the last libvirt object
of a connection closes it, a call to this server, and Python's cyclic garbage collector
may run that in the server's thread, which then waits for itself. Close libvirt
connections and run ``gc.collect()`` in your thread before :meth:`stop` (which collects
once itself), or run the mock in its own process (``pyvirtrpc mock``).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import trio

from pyvirtrpc.backends.mock import MockBackend
from pyvirtrpc.backends.mock.hypervisor import MockHypervisor
from pyvirtrpc.server import Server, TcpAddress, UnixAddress

__all__ = ["MockDaemon"]

T = TypeVar("T")


class MockDaemon:
    """A mock libvirtd on ``socket`` and ``ro_socket`` (in a fresh folder by default).

    ``tcp=True`` also listens on a free TCP port of 127.0.0.1 (``tcp_port``).
    ``server_options`` go to :class:`pyvirtrpc.server.Server`.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        hypervisor: MockHypervisor | None = None,
        tcp: bool = False,
        **server_options: Any,
    ) -> None:
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="pyvirtrpc-mock-"))
        self.socket = self.dir / "libvirt-sock"
        self.ro_socket = self.dir / "libvirt-sock-ro"
        self.hypervisor = hypervisor if hypervisor is not None else MockHypervisor()
        self.server = Server(MockBackend(self.hypervisor), **server_options)
        self._tcp = tcp
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def uri(self) -> str:
        return f"test+unix:///default?socket={self.socket}"

    @property
    def ro_uri(self) -> str:
        return f"test+unix:///default?socket={self.ro_socket}"

    @property
    def tcp_port(self) -> int:
        return self.server.tcp_ports[0]

    def start(self) -> MockDaemon:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="pyvirtrpc-mock", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("the mock libvirtd did not start") from self._failure
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        addresses: list[UnixAddress | TcpAddress] = [
            UnixAddress(self.socket), UnixAddress(self.ro_socket, readonly=True)
        ]
        if self._tcp:
            addresses.append(TcpAddress("127.0.0.1", 0))
        with trio.CancelScope() as self._cancel:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.server.serve, *addresses)
                self._ready.set()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` in the server's thread and return its result."""
        assert self._token is not None, "the mock libvirtd is not running"
        return trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        gc.collect()  # here, not in the server's thread (see the module docstring)
        if self._cancel is not None and self._token is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        thread.join()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MockDaemon:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
