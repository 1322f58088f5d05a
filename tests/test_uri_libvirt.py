"""The CONNECT_OPEN name, compared with what real libvirt (libvirt-python) sends.

libvirt-python connects to a scripted daemon on a unix socket or on TCP, which records
the name; parse_uri must derive the same name from the same URI.
"""

from __future__ import annotations

import libvirt
import pytest
import trio
from fakedaemon import FakeDaemon

import pyvirtrpc
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.uri import parse_uri

pytestmark = pytest.mark.libvirtd  # a real peer: libvirt's own client library

# {sock} is the scripted daemon's socket; libvirt strips ?socket= from the name.
UNIX_URIS = [
    "test+unix:///default?socket={sock}",
    "qemu+unix:///system?socket={sock}",
    "qemu+unix:///session?socket={sock}&foo=bar%20baz&flag&=ignored&x=%2F~.-_",
    "qemu+UNIX:///system?Socket={sock}&mode=legacy&no_verify=1&pkipath=/p&keep=1",
    "qemu+unix:///system?a=1;b=2&socket={sock}",
    "qemu+unix:///system?socket={sock}&a=1;b=2",
    "lxc+unix:///?socket={sock}&authfile=/a&command=c&netcat=n&keyfile=k&sshauth=s",
    "qemu+unix:///a%20b:c@d;e=f+g$h,i(j)k!~*'?socket={sock}",
    "qemu+unix:///system?socket={sock}#frag%20ment?x",
    "remote+unix:///?socket={sock}",
    "qemu+unix:///system?socket={sock}&name=custom:///x",
    "Qemu+unix:///%E2%82%AC?socket={sock}",
]


async def _names_sent(uri: str, listener: trio.SocketListener | None, sock: str) -> list[str]:
    """Let libvirt-python open ``uri`` against the scripted daemon; the names it sent."""
    daemons: list[FakeDaemon] = []

    async def serve(stream: trio.abc.Stream) -> None:
        daemon = FakeDaemon(stream)
        daemons.append(daemon)
        await daemon.serve()

    async def open_and_close() -> None:
        conn = await trio.to_thread.run_sync(libvirt.open, uri)
        await trio.to_thread.run_sync(conn.close)

    async with trio.open_nursery() as nursery:
        if listener is None:
            raw = trio.socket.socket(trio.socket.AF_UNIX)
            await raw.bind(sock)
            raw.listen()
            listener = trio.SocketListener(raw)
        nursery.start_soon(trio.serve_listeners, serve, [listener])
        with trio.fail_after(20):
            await open_and_close()
        nursery.cancel_scope.cancel()
    return [args.name for d in daemons for args in d.args(P.CONNECT_OPEN)]


@pytest.mark.parametrize("template", UNIX_URIS)
async def test_name_is_libvirts_over_unix(template: str, tmp_path: object) -> None:
    sock = f"{tmp_path}/sock"
    uri = template.format(sock=sock)
    assert await _names_sent(uri, None, sock) == [parse_uri(uri).name]


async def test_name_is_libvirts_over_tcp_and_our_tcp_transport_works() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    uri = f"qemu+tcp://127.0.0.1:{port}/system?keep=me&no_verify=1"
    assert await _names_sent(uri, listeners[0], "") == ["qemu:///system?keep=me"]
    assert parse_uri(uri).name == "qemu:///system?keep=me"
    # Our own client over TCP, to the same kind of daemon:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    uri = f"qemu+tcp://127.0.0.1:{listeners[0].socket.getsockname()[1]}/system?keep=me"
    async with trio.open_nursery() as nursery:
        daemons: list[FakeDaemon] = []

        async def serve(stream: trio.abc.Stream) -> None:
            daemons.append(FakeDaemon(stream))
            await daemons[-1].serve()

        nursery.start_soon(trio.serve_listeners, serve, listeners)
        async with pyvirtrpc.open_connection(uri) as conn:
            assert await conn.get_hostname() == "fake"
        nursery.cancel_scope.cancel()
    assert [a.name for a in daemons[0].args(P.CONNECT_OPEN)] == ["qemu:///system?keep=me"]
