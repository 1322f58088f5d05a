"""The Trio client against a real libvirtd (test driver): facade, events, errors, limits.

Facts are checked against libvirt-python talking to the same daemon where it can say them.
"""

from __future__ import annotations

import stat
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
import trio
from realdaemons import LibvirtdTestDriver, tool

import pyvirtrpc
from pyvirtrpc import (
    CloseReason,
    ConnectionClosed,
    DomainEventID,
    NoDomainError,
    NoSupportError,
    OperationDeniedError,
)
from pyvirtrpc.errors import ErrorDomain, ErrorNumber
from pyvirtrpc.events import ConnectionClosedEvent, DomainLifecycle, LifecycleEvent
from pyvirtrpc.gen import remote as wire
from pyvirtrpc.gen.remote import Procedure as P

pytestmark = pytest.mark.libvirtd

TEST_UUID = uuid.UUID("6695eb01-f6a4-8304-79aa-97f2502e193f")
NEW_DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu>
  <os><type arch='i686'>hvm</type></os>
</domain>"""


async def test_facade_says_what_libvirt_python_says(libvirtd_test: LibvirtdTestDriver) -> None:
    ref = libvirt.open(libvirtd_test.uri)
    try:
        ref_dom = ref.lookupByName("test")
        async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
            assert conn.uri == libvirtd_test.uri
            assert await conn.get_hostname() == ref.getHostname()
            assert await conn.get_type() == ref.getType()
            assert await conn.get_version() == ref.getVersion()
            assert await conn.get_lib_version() == ref.getLibVersion()
            assert await conn.get_capabilities() == ref.getCapabilities()
            node = await conn.get_node_info()
            assert [node.model, node.memory // 1024, node.cpus, node.mhz, node.nodes,
                    node.sockets, node.cores, node.threads] == ref.getInfo()
            domains = await conn.list_domains()
            assert sorted(d.name for d in domains) == sorted(
                d.name() for d in ref.listAllDomains())
            dom = await conn.lookup_domain("test")
            assert (dom.name, dom.uuid, dom.id) == ("test", TEST_UUID, ref_dom.ID())
            info = await dom.info()
            assert [info.state, info.max_mem, info.memory, info.nr_virt_cpu] == \
                ref_dom.info()[:4]
            assert await dom.state() == tuple(ref_dom.state())
            assert await dom.xml_desc() == ref_dom.XMLDesc()
            assert await dom.is_active() is True
            block = await dom.block_info("vda")
            assert [block.capacity, block.allocation, block.physical] == \
                ref_dom.blockInfo("vda")
            stats = await dom.block_stats("vda")
            assert stats.errs == ref_dom.blockStats("vda")[4]
            all_stats = await conn.get_all_domain_stats()
            ref_stats = {d.name(): s for d, s in ref.getAllDomainStats()}
            assert all_stats == ref_stats
            assert all_stats["test"]["state.state"] == libvirt.VIR_DOMAIN_RUNNING
            assert await dom.stats() == ref_stats["test"]
    finally:
        ref.close()


async def test_lookup_by_uuid_id_and_name(libvirtd_test: LibvirtdTestDriver) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        by_name = await conn.lookup_domain("test")
        assert await conn.lookup_domain(TEST_UUID) == by_name
        assert await conn.lookup_domain(str(TEST_UUID)) == by_name
        assert await conn.lookup_domain(by_name.id) == by_name


async def test_generic_call(libvirtd_test: LibvirtdTestDriver) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        ret = await conn.call(P.DOMAIN_LOOKUP_BY_NAME, wire.DomainLookupByNameArgs("test"))
        assert uuid.UUID(bytes=ret.dom.uuid) == TEST_UUID
        assert (await conn.call(P.CONNECT_GET_TYPE)).type == "TEST"


async def test_missing_domain_has_libvirts_exact_error(libvirtd_test: LibvirtdTestDriver) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        with pytest.raises(NoDomainError) as info:
            await conn.lookup_domain("no-such-domain")
    err = info.value
    assert (err.code, err.domain, err.level) == (ErrorNumber.NO_DOMAIN, ErrorDomain.TEST, 2)
    assert err.message == "Domain not found"
    with pytest.raises(libvirt.libvirtError) as ref_info:
        libvirt.open(libvirtd_test.uri).lookupByName("no-such-domain")
    assert (err.code, err.domain, err.message) == (
        ref_info.value.get_error_code(), ref_info.value.get_error_domain(),
        ref_info.value.get_error_message())


async def test_block_threshold_unsupported_by_the_test_driver(
    libvirtd_test: LibvirtdTestDriver,
) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        dom = await conn.lookup_domain("test")
        with pytest.raises(NoSupportError) as info:
            await dom.set_block_threshold("vda", 1 << 20)
        assert (info.value.code, info.value.domain) == (3, 20)
        assert info.value.message == ("this function is not supported by the connection "
                                      "driver: virDomainSetBlockThreshold")
        assert (await dom.info()).state == libvirt.VIR_DOMAIN_RUNNING  # still usable


async def test_lifecycle_events(libvirtd_test: LibvirtdTestDriver) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        dom = await conn.lookup_domain("test")
        async with conn.domain_events(DomainEventID.LIFECYCLE, domain=dom) as events, \
                conn.domain_events(DomainEventID.LIFECYCLE) as everything:
            await dom.suspend()
            await dom.resume()
            await dom.destroy()
            assert dom.id == 1
            await dom.start()
            assert dom.id > 1  # the running id after the start
            seen = []
            with trio.fail_after(10):
                for _ in range(4):
                    event = await events.receive()
                    assert isinstance(event, LifecycleEvent)
                    assert event.domain.name == "test"
                    seen.append(DomainLifecycle(event.event))
            assert seen == [DomainLifecycle.SUSPENDED, DomainLifecycle.RESUMED,
                            DomainLifecycle.STOPPED, DomainLifecycle.STARTED]
            with trio.fail_after(10):
                also = [await everything.receive() for _ in range(4)]
            assert [getattr(e, "event", None) for e in also] == [int(s) for s in seen]


async def test_define_start_shutdown_reboot_undefine(libvirtd_test: LibvirtdTestDriver) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn, \
            conn.domain_events(DomainEventID.LIFECYCLE) as events:
        dom = await conn.define_domain(NEW_DOMAIN.format(name="pyvirtrpc-new"))
        assert dom.id == -1 and await dom.is_active() is False
        await dom.start()
        await dom.reboot()
        await dom.shutdown()
        assert await dom.is_active() is False
        await dom.undefine()
        with pytest.raises(NoDomainError):
            await conn.lookup_domain("pyvirtrpc-new")
        got = []
        with trio.fail_after(10):
            while len(got) < 4:
                event = await events.receive()
                assert isinstance(event, LifecycleEvent)
                if event.domain.name == "pyvirtrpc-new":
                    got.append(DomainLifecycle(event.event))
        assert got == [DomainLifecycle.DEFINED, DomainLifecycle.STARTED,
                       DomainLifecycle.STOPPED, DomainLifecycle.UNDEFINED]


async def test_200_concurrent_calls_from_many_tasks(libvirtd_test: LibvirtdTestDriver) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        dom = await conn.lookup_domain("test")
        xml = await dom.xml_desc()
        results: list[object] = []

        async def worker(i: int) -> None:
            for j in range(5):
                match (i + j) % 4:
                    case 0:
                        results.append((await dom.info()).max_mem == 8388608)
                    case 1:
                        results.append(await dom.xml_desc() == xml)
                    case 2:
                        results.append((await conn.lookup_domain(TEST_UUID)) == dom)
                    case _:
                        results.append((await dom.state())[0] == libvirt.VIR_DOMAIN_RUNNING)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(worker, i)
        assert results == [True] * 200
        assert conn._session.in_flight == 0


async def test_call_cancelled_mid_flight_leaves_the_connection_working(
    libvirtd_test: LibvirtdTestDriver,
) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        dom = await conn.lookup_domain("test")
        completed: list[str] = []

        async def call() -> None:
            completed.append(await dom.xml_desc())

        mid_flight = 0
        for _ in range(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                while conn._session.in_flight == 0 and not completed:
                    await trio.sleep(0)  # until the call is on the wire
                mid_flight += conn._session.in_flight == 1  # and its reply not yet read
                nursery.cancel_scope.cancel()
            completed.clear()
        assert mid_flight >= 10  # (the daemon answers in tens of microseconds)
        infos = [await dom.info() for _ in range(5)]
        assert all(i.max_mem == 8388608 for i in infos)
        assert conn._session.in_flight == 0 and not conn.closed


@pytest.mark.slow
async def test_idle_connection_is_kept_alive_past_30_seconds(
    libvirtd_test: LibvirtdTestDriver,
) -> None:
    """Slow (35 s): libvirtd drops a client silent for 30 s once it asked for keepalive."""
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        dom = await conn.lookup_domain("test")
        assert conn.server_keepalive
        await trio.sleep(35)
        assert not conn.closed
        assert (await dom.info()).state == libvirt.VIR_DOMAIN_RUNNING


async def test_daemon_killed_mid_call_fails_every_call_within_a_second(
    libvirtd_test_factory: Callable[[], LibvirtdTestDriver],
) -> None:
    daemon = libvirtd_test_factory()
    failures: list[float] = []
    async with pyvirtrpc.open_connection(daemon.uri) as conn:
        dom = await conn.lookup_domain("test")
        killed_at: list[float] = []

        async def caller() -> None:
            try:
                while True:
                    await dom.info()
            except ConnectionClosed:
                failures.append(trio.current_time())

        async with conn.domain_events(DomainEventID.LIFECYCLE) as events:
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    for _ in range(10):
                        nursery.start_soon(caller)
                    await trio.sleep(0.3)
                    killed_at.append(trio.current_time())
                    daemon.kill()
            final = [item async for item in events]
        assert len(failures) == 10
        assert max(failures) - killed_at[0] < 1.0
        # EOF, or a reset (ERROR) when the daemon died with our bytes unread.
        assert final in ([ConnectionClosedEvent(CloseReason.EOF)],
                         [ConnectionClosedEvent(CloseReason.ERROR)])
        with pytest.raises(ConnectionClosed):
            await dom.info()


async def test_readonly_socket_refuses_writes(libvirtd_test: LibvirtdTestDriver) -> None:
    # Without readonly=True the daemon itself refuses (the socket makes the client RO)...
    async with pyvirtrpc.open_connection(libvirtd_test.ro_uri) as conn:
        dom = await conn.lookup_domain("test")
        assert (await dom.info()).state == libvirt.VIR_DOMAIN_RUNNING
        with pytest.raises(OperationDeniedError) as remote:
            await dom.suspend()
    # ...with it, the client refuses without asking, with the same error.
    async with pyvirtrpc.open_connection(libvirtd_test.ro_uri, readonly=True) as conn:
        dom = await conn.lookup_domain("test")
        with pytest.raises(OperationDeniedError) as local:
            await dom.suspend()
    for err in (remote.value, local.value):
        assert (err.code, err.domain) == (ErrorNumber.OPERATION_DENIED, ErrorDomain.DOMAIN)
        assert err.message == "operation forbidden: read only access prevents virDomainSuspend"
    assert (local.value.str1, local.value.str2) == (remote.value.str1, remote.value.str2)


# ------------------------------------------------------------------ over ssh

FAKE_SSH = """\
#!/bin/sh
# A stand-in for ssh: drop the options up to "--" and the host, run the command here,
# as sshd would (with sh -c). In a private mount namespace, with the test daemon's
# socket folder over /run/libvirt, when FAKE_SSH_RUN_DIR is set (for virt-ssh-helper).
while [ "$1" != "--" ]; do echo "$1" >> "$FAKE_SSH_LOG"; shift; done
shift; echo "host=$1" >> "$FAKE_SSH_LOG"; shift
echo "command=$1" >> "$FAKE_SSH_LOG"
if [ -n "$FAKE_SSH_RUN_DIR" ]; then
    exec unshare -m sh -c 'mount --bind "$FAKE_SSH_RUN_DIR" /run/libvirt && exec sh -c "$0"' "$1"
fi
exec sh -c "$1"
"""

FAKE_NC = """\
#!{python}
# A stand-in for "nc -U SOCKET": relay stdin/stdout to a unix socket.
import os, socket, sys, threading
if "-U" not in sys.argv:
    sys.exit(1)
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[sys.argv.index("-U") + 1])
def up():
    while data := os.read(0, 65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := sock.recv(65536):
    os.write(1, data)
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_ssh_transport_with_netcat(libvirtd_test: LibvirtdTestDriver, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = _script(tmp_path / "ssh", FAKE_SSH)
    nc = _script(tmp_path / "nc", FAKE_NC.format(python=sys.executable))
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    uri = (f"test+ssh://alice@example.invalid:2222/default?command={ssh}&netcat={nc}"
           f"&socket={libvirtd_test.socket}&no_tty=1&keyfile=/k")
    async with pyvirtrpc.open_connection(uri) as conn:
        dom = await conn.lookup_domain("test")
        assert (await dom.info()).state == libvirt.VIR_DOMAIN_RUNNING
    lines = log.read_text().splitlines()
    assert lines[:-2] == ["-p", "2222", "-l", "alice", "-i", "/k", "-T", "-e", "none",
                          "-o", "BatchMode=yes"]
    assert lines[-2] == "host=example.invalid"
    assert f"-U {libvirtd_test.socket}" in lines[-1] and "virt-ssh-helper" not in lines[-1]


async def test_ssh_transport_with_virt_ssh_helper(libvirtd_test: LibvirtdTestDriver,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tool("virt-ssh-helper")
    ssh = _script(tmp_path / "ssh", FAKE_SSH)
    monkeypatch.setenv("FAKE_SSH_LOG", str(tmp_path / "ssh.log"))
    monkeypatch.setenv("FAKE_SSH_RUN_DIR", str(libvirtd_test.dir))
    uri = f"test+ssh://host/default?command={ssh}&proxy=native"
    async with pyvirtrpc.open_connection(uri, readonly=True) as conn:
        dom = await conn.lookup_domain("test")
        assert (await dom.info()).state == libvirt.VIR_DOMAIN_RUNNING
        with pytest.raises(OperationDeniedError):  # virt-ssh-helper -r: read-only socket
            await conn.call(P.DOMAIN_SUSPEND, wire.DomainSuspendArgs(dom.ref))
    command = (tmp_path / "ssh.log").read_text().splitlines()[-1]
    assert command == "command=sh -c 'virt-ssh-helper -r 'test:///default''"



async def test_network_and_storage_pool_events(libvirtd_test: LibvirtdTestDriver) -> None:
    ref = libvirt.open(libvirtd_test.uri)  # makes the changes; we only watch
    try:
        async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn, \
                conn.network_events() as networks, conn.storage_pool_events() as pools:
            net = ref.networkLookupByName("default")
            pool = ref.storagePoolLookupByName("default-pool")
            for change in (net.destroy, net.create, pool.refresh, pool.destroy, pool.create):
                await trio.to_thread.run_sync(change)
            with trio.fail_after(10):
                got_nets = [await networks.receive() for _ in range(2)]
                got_pools = [await pools.receive() for _ in range(3)]
        assert [(type(e).__name__, e.network.name, e.event) for e in got_nets] == [  # type: ignore[union-attr]
            ("NetworkLifecycleEvent", "default", libvirt.VIR_NETWORK_EVENT_STOPPED),
            ("NetworkLifecycleEvent", "default", libvirt.VIR_NETWORK_EVENT_STARTED),
        ]
        assert [(type(e).__name__, e.pool.name, getattr(e, "event", None))  # type: ignore[union-attr]
                for e in got_pools] == [
            ("StoragePoolRefreshEvent", "default-pool", None),
            ("StoragePoolLifecycleEvent", "default-pool", libvirt.VIR_STORAGE_POOL_EVENT_STOPPED),
            ("StoragePoolLifecycleEvent", "default-pool", libvirt.VIR_STORAGE_POOL_EVENT_STARTED),
        ]
    finally:
        ref.close()


async def test_secret_events_unsupported_by_the_test_driver(
    libvirtd_test: LibvirtdTestDriver,
) -> None:
    async with pyvirtrpc.open_connection(libvirtd_test.uri) as conn:
        with pytest.raises(NoSupportError, match="virConnectSecretEventRegisterAny"):
            async with conn.secret_events():
                pass
        assert await conn.get_type() == "TEST"  # and the connection goes on


async def test_ext_transport_runs_the_command(libvirtd_test: LibvirtdTestDriver,
                                              tmp_path: Path) -> None:
    nc = _script(tmp_path / "nc", FAKE_NC.format(python=sys.executable))
    command = _script(tmp_path / "proxy", f"#!/bin/sh\nexec {nc} -U {libvirtd_test.socket}\n")
    async with pyvirtrpc.open_connection(f"test+ext:///default?command={command}") as conn:
        assert (await (await conn.lookup_domain("test")).info()).max_mem == 8388608
