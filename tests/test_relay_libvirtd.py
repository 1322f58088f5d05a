"""The relay in front of a real test-driver libvirtd, with real clients on both sides.

Most tests run the relay as the command (``pyvirtrpc relay``, in its own process) and
compare what virsh, libvirt-python or raw packets get through it with what they get from
libvirtd directly; a second private libvirtd serves the direct side where a command
changes state. The test driver forgets its state when its last connection closes, so a
libvirt-python connection to each daemon stays open while the commands run.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from mockdaemons import VirshEvents, libvirt_events, wait_for
from realdaemons import LibvirtdTestDriver, tool, virsh, virsh_env
from relays import RelayProcess, admin_clients, relay_factory, via
from test_mock_side_by_side import domain_xml, read_only_commands, run, virsh_commands
from test_server import RawClient

import pyvirtrpc
from pyvirtrpc.backends.relay import RelayConnection, serve_relay
from pyvirtrpc.client import CloseReason
from pyvirtrpc.errors import NoDomainError, NoSupportError, RemoteError
from pyvirtrpc.events import ConnectionClosedEvent, LifecycleEvent
from pyvirtrpc.gen import qemu, remote
from pyvirtrpc.gen.remote import Procedure as P
from pyvirtrpc.gen.virnet import MessageStatus, MessageType
from pyvirtrpc.sansio.framing import Packet, encode_packet

__all__ = ["libvirt_events", "relay_factory"]

pytestmark = pytest.mark.libvirtd

Relay = Callable[..., RelayProcess]
Daemons = Callable[[], LibvirtdTestDriver]

# Commands whose procedures pyvirtrpc does not decode (networks, pools, autostart, max
# vcpus...): the relay forwards them by their header all the same.
UNDECODED_COMMANDS = [
    ["maxvcpus"], ["autostart", "test"], ["dominfo", "test"], ["autostart", "--disable", "test"],
    ["net-list", "--all"], ["net-info", "default"], ["net-dumpxml", "default"],
    ["pool-list", "--all"], ["vol-list", "default-pool"], ["nodedev-list"],
    ["iface-list", "--all"], ["freecell"], ["secret-list"], ["nwfilter-list"],
    ["domiflist", "test"], ["domifstat", "test", "vnet0"], ["domjobinfo", "test"],
    ["snapshot-list", "test"], ["schedinfo", "test"], ["memtune", "test"],
    ["domhostname", "test"], ["cpu-models", "x86_64"], ["sysinfo"],
]


def keep_state(*uris: str) -> list[Any]:
    import libvirt

    return [libvirt.open(uri) for uri in uris]


def release(connections: list[Any]) -> None:
    for conn in connections:
        conn.close()
    connections.clear()
    gc.collect()


# ------------------------------------------------------------------- virsh, side by side


def side_by_side(daemons: Daemons, relays: Relay, xml: Path
                 ) -> tuple[LibvirtdTestDriver, RelayProcess]:
    """A libvirtd to use directly, and a relay in front of another; ``xml`` gets a domain
    named as the file is."""
    xml.write_text(domain_xml(xml.stem))
    direct, behind = daemons(), daemons()
    return direct, relays(behind.uri)


def test_virsh_through_the_relay_prints_what_libvirtd_prints(
        libvirtd_test_factory: Daemons, relay_factory: Relay, tmp_path: Path) -> None:
    xml = tmp_path / "sbs.xml"
    direct, relay = side_by_side(libvirtd_test_factory, relay_factory, xml)
    kept = keep_state(direct.uri, relay.uri)
    try:
        for args in virsh_commands(xml) + UNDECODED_COMMANDS:
            assert run(relay.uri, args) == run(direct.uri, args), args
        for args in read_only_commands(xml):
            # the read-only socket, and VIR_CONNECT_RO on the read-write one
            assert run(relay.ro_uri, args, readonly=True) == run(
                direct.ro_uri, args, readonly=True), args
            assert run(relay.uri, args, readonly=True) == run(
                direct.uri, args, readonly=True), args
    finally:
        release(kept)


def test_screenshot_stream_comes_through_unchanged(
        libvirtd_test: LibvirtdTestDriver, relay_factory: Relay, tmp_path: Path) -> None:
    relay = relay_factory(libvirtd_test.uri)
    printed = []
    for name, uri in (("direct.png", libvirtd_test.uri), ("relayed.png", relay.uri)):
        out = virsh(uri, "screenshot", "test", str(tmp_path / name)).stdout
        printed.append(out.replace(name, "FILE"))
    assert printed[0] == printed[1] == f"Screenshot saved to {tmp_path}/FILE, with type of " \
        "image/png\n"
    shot = (tmp_path / "direct.png").read_bytes()
    assert shot.startswith(b"\x89PNG") and len(shot) > 1000
    assert (tmp_path / "relayed.png").read_bytes() == shot
    assert [r["procedure"] for r in relay.audit()][-2:] == ["DOMAIN_LOOKUP_BY_NAME",
                                                             "DOMAIN_SCREENSHOT"]


def test_lifecycle_events_through_the_relay_print_the_same(
        libvirtd_test_factory: Daemons, relay_factory: Relay, tmp_path: Path) -> None:
    xml = tmp_path / "ev.xml"
    direct, relay = side_by_side(libvirtd_test_factory, relay_factory, xml)
    printed = []
    for uri in (direct.uri, relay.uri):
        watcher = VirshEvents(uri, "--all")  # its connection also keeps the state
        try:
            if uri == relay.uri:  # the audit log says when virsh has registered
                wait_for(lambda: sum(r["procedure"] == "CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY"
                                     for r in relay.audit()) == 27, "virsh event to register")
            else:
                watcher.settle(1.0)
            for command in (["define", str(xml)], ["start", "ev"], ["suspend", "ev"],
                            ["resume", "ev"], ["suspend", "test"], ["resume", "test"],
                            ["destroy", "ev"], ["undefine", "ev"]):
                virsh(uri, *command)
            printed.append(watcher.expect(8))
        finally:
            watcher.stop()
    assert printed[0] == printed[1]
    assert printed[1][:2] == ["event 'lifecycle' for domain 'ev': Defined Added",
                              "event 'lifecycle' for domain 'ev': Started Booted"]


# ------------------------------------------------------------------ packets, byte for byte


class _Raw:
    """Arguments given as bytes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def encode(self) -> bytes:
        return self.payload


NAMED_TEST = remote.DomainLookupByNameArgs("test")
NOPE = remote.DomainLookupByNameArgs("nope")
TEST_DOMAIN = remote.NonnullDomain("test", bytes.fromhex("6695eb01f6a4830479aa97f2502e193f"), 1)


async def exchange(path: Path) -> list[Packet]:
    """Hand-made calls, some before CONNECT_OPEN, and every packet they got back."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        client = RawClient(stream)
        got = [await client.call(P.CONNECT_GET_HOSTNAME),  # not open yet
               await client.call(P.AUTH_LIST),
               await client.call(P.CONNECT_OPEN, remote.ConnectOpenArgs("test:///default", 0))]
        for proc, args, prog in (
            (P.CONNECT_GET_HOSTNAME, None, remote.REMOTE_PROGRAM),
            (P.DOMAIN_LOOKUP_BY_NAME, NAMED_TEST, remote.REMOTE_PROGRAM),
            (P.DOMAIN_LOOKUP_BY_NAME, NOPE, remote.REMOTE_PROGRAM),
            (P.DOMAIN_GET_XML_DESC, remote.DomainGetXmlDescArgs(TEST_DOMAIN, 0),
             remote.REMOTE_PROGRAM),
            (P.DOMAIN_SET_BLOCK_THRESHOLD,
             remote.DomainSetBlockThresholdArgs(TEST_DOMAIN, "vda", 1 << 20, 0),
             remote.REMOTE_PROGRAM),
            (5, _Raw(b"\0\0\0\0"), remote.REMOTE_PROGRAM),  # CONNECT_GET_MAX_VCPUS: undecoded
            (102, _Raw(bytes(12)), remote.REMOTE_PROGRAM),  # NODE_GET_FREE_MEMORY: undecoded
            (9999, None, remote.REMOTE_PROGRAM),  # no such procedure
            (P.DOMAIN_GET_INFO, _Raw(b"\0\0\0\x09te"), remote.REMOTE_PROGRAM),  # cut short
            (qemu.Procedure.DOMAIN_MONITOR_COMMAND,
             qemu.DomainMonitorCommandArgs(qemu.NonnullDomain("test", TEST_DOMAIN.uuid, 1),
                                           "info block", 1), qemu.QEMU_PROGRAM),
            (1, None, 0x00068000),  # LXC program
            (1, None, 0x12345),  # no such program
        ):
            got.append(await client.call(proc, args, prog))
        await stream.send_all(encode_packet(remote.REMOTE_PROGRAM, 1, P.CONNECT_GET_TYPE,
                                            MessageType.CALL, 77, MessageStatus.ERROR, b""))
        got.append(await client.reply(77))  # a call with a bad status
        got.append(await client.call(P.CONNECT_CLOSE))
        assert await client.receive() is None
    return got


async def test_replies_and_errors_come_back_byte_for_byte(
        libvirtd_test: LibvirtdTestDriver, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_relay, libvirtd_test.uri,
                                              tmp_path / "relay-sock"))
        direct = await exchange(libvirtd_test.socket)
        relayed = await exchange(tmp_path / "relay-sock")
        nursery.cancel_scope.cancel()
    assert relayed == direct
    statuses = [p.status for p in direct]
    assert statuses.count(MessageStatus.ERROR) == 9, direct
    assert b"unknown procedure: 9999" in direct[10].payload


# -------------------------------------------------------------------- libvirt-python


def test_libvirt_python_through_the_relay(libvirtd_test: LibvirtdTestDriver,
                                          relay_factory: Relay, libvirt_events: Any) -> None:
    libvirt = libvirt_events
    relay = relay_factory(libvirtd_test.uri)
    direct, relayed = libvirt.open(libvirtd_test.uri), libvirt.open(relay.uri)
    events: list[tuple[str, int, int]] = []
    got_two = threading.Event()

    def lifecycle(conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        events.append((dom.name(), event, detail))
        if len(events) == 2:
            got_two.set()

    try:
        assert relayed.getHostname() == direct.getHostname()
        assert relayed.getLibVersion() == direct.getLibVersion()
        assert [d.name() for d in relayed.listAllDomains()] == ["test"]
        dom = relayed.lookupByName("test")
        assert dom.UUIDString() == "6695eb01-f6a4-8304-79aa-97f2502e193f"
        assert dom.XMLDesc() == direct.lookupByName("test").XMLDesc()
        assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
        errors = []
        for conn in (direct, relayed):
            try:
                conn.lookupByName("nope")
            except libvirt.libvirtError as exc:
                errors.append((exc.get_error_code(), exc.get_error_domain(), str(exc)))
        assert errors[0] == errors[1] and errors[0][0] == libvirt.VIR_ERR_NO_DOMAIN
        callback = relayed.domainEventRegisterAny(
            dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
        dom.suspend()
        dom.resume()
        assert got_two.wait(10), events
        assert events == [("test", libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0),
                          ("test", libvirt.VIR_DOMAIN_EVENT_RESUMED, 0)]
        relayed.domainEventDeregisterAny(callback)
    finally:
        direct.close()
        relayed.close()
        gc.collect()


# ----------------------------------------------------------------------- our own client


@asynccontextmanager
async def relay_in_process(upstream: str, path: Path, **options: Any) -> AsyncIterator[str]:
    """serve_relay in this Trio run; yields the URI to give clients."""
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_relay, upstream, path, **options))
        yield via(upstream, path)
        nursery.cancel_scope.cancel()


async def test_our_client_through_the_relay(libvirtd_test: LibvirtdTestDriver,
                                            tmp_path: Path) -> None:
    async with relay_in_process(libvirtd_test.uri, tmp_path / "sock") as uri, \
            pyvirtrpc.open_connection(uri) as conn, \
            pyvirtrpc.open_connection(libvirtd_test.uri) as straight:
        assert conn.server_keepalive and conn.server_event_callbacks
        assert await conn.get_hostname() == await straight.get_hostname()
        assert await conn.get_capabilities() == await straight.get_capabilities()
        dom = await conn.lookup_domain("test")
        assert (await dom.info()).state == 1
        assert await dom.xml_desc() == await (await straight.lookup_domain("test")).xml_desc()
        failures: list[RemoteError] = []
        for c in (straight, conn):
            with pytest.raises(NoDomainError) as nope:
                await c.lookup_domain("nope")
            failures.append(nope.value)
            with pytest.raises(NoSupportError):
                await (await c.lookup_domain("test")).set_block_threshold("vda", 1 << 20)
        assert vars(failures[0]) == vars(failures[1])
        async with conn.domain_events(pyvirtrpc.DomainEventID.LIFECYCLE, domain=dom) as events:
            await dom.suspend()
            await dom.resume()
            with trio.fail_after(10):
                seen = [await events.receive(), await events.receive()]
        assert [type(e) for e in seen] == [LifecycleEvent, LifecycleEvent]
        assert [(e.domain.name, e.event) for e in seen] == [("test", 3), ("test", 4)]  # type: ignore[attr-defined]


# -------------------------------------------------------- upstream killed, client gone


def test_upstream_killed_virsh_event_sees_the_close_at_once(
        libvirtd_test_factory: Daemons, relay_factory: Relay) -> None:
    outputs = []
    for relayed in (False, True):
        daemon = libvirtd_test_factory()
        uri = relay_factory(daemon.uri).uri if relayed else daemon.uri
        proc = subprocess.Popen([tool("virsh"), "-c", uri, "event", "--all", "--loop"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=virsh_env())
        connected = functools.partial(lambda d: admin_clients(d) == 1, daemon)
        wait_for(connected, "virsh to connect")
        time.sleep(1.0)  # virsh registers its 27 callbacks
        killed = time.monotonic()
        daemon.kill()
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - killed < 1.0
        outputs.append((proc.returncode, out, err.replace(uri, "URI")))
    assert outputs[1] == outputs[0]
    assert outputs[0][2].startswith("error: Disconnected from URI due to end of file\n")


def test_upstream_killed_libvirt_python_close_callback(
        libvirtd_test_factory: Daemons, relay_factory: Relay, libvirt_events: Any) -> None:
    libvirt = libvirt_events
    daemon = libvirtd_test_factory()
    relay = relay_factory(daemon.uri)
    conn = libvirt.open(relay.uri)
    closed: list[tuple[int, float]] = []
    done = threading.Event()

    def on_close(conn: Any, reason: int, opaque: Any) -> None:
        closed.append((reason, time.monotonic()))
        done.set()

    try:
        conn.registerCloseCallback(on_close, None)
        assert conn.getHostname()
        killed = time.monotonic()
        daemon.kill()
        assert done.wait(5)
        assert closed[0][0] == libvirt.VIR_CONNECT_CLOSE_REASON_EOF
        assert closed[0][1] - killed < 1.0
        with pytest.raises(libvirt.libvirtError):
            conn.getHostname()
    finally:
        with contextlib.suppress(libvirt.libvirtError):  # a call: fails once closed
            conn.unregisterCloseCallback()
        conn.close()
        gc.collect()


async def test_upstream_killed_our_client_sees_the_close_at_once(
        libvirtd_test_factory: Daemons, tmp_path: Path) -> None:
    daemon = libvirtd_test_factory()
    async with relay_in_process(daemon.uri, tmp_path / "sock") as uri, \
            pyvirtrpc.open_connection(uri) as conn, conn.domain_events() as events:
        assert await conn.get_type() == "TEST"
        killed = trio.current_time()
        await trio.to_thread.run_sync(daemon.kill)
        with trio.fail_after(1):
            await conn.wait_closed()
            assert isinstance(await events.receive(), ConnectionClosedEvent)
        assert trio.current_time() - killed < 1.0
        assert conn.close_reason is CloseReason.EOF
        with pytest.raises(pyvirtrpc.ConnectionClosed):
            await conn.get_type()


async def test_upstream_killed_after_a_client_left_with_calls_in_flight(
        libvirtd_test_factory: Daemons, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A client whose calls fill the in-flight limit (so the relay is not reading it)
    leaves unseen; then the upstream dies. Failing its forwarded call cancels its
    feature question, which the lost upstream connection must not wake a second time
    (that corrupted Trio's scheduler). The client is dropped at once, nothing is logged
    as a failure, and the relay serves the next client."""
    daemon = libvirtd_test_factory()
    path = tmp_path / "sock"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_relay, daemon.uri, path,
                                                       max_requests=2))
        stream = await trio.open_unix_socket(str(path))
        client = RawClient(stream)
        await client.open()
        (served,) = server.clients
        os.kill(daemon.pid, signal.SIGSTOP)  # calls from now on stay unanswered
        await client.send(P.CONNECT_GET_HOSTNAME)  # forwarded
        await client.send(P.CONNECT_SUPPORTS_FEATURE,  # asked upstream by the relay
                          remote.ConnectSupportsFeatureArgs(7))
        with trio.fail_after(5):
            while served.session.in_flight < 2:
                await trio.sleep(0.01)
        await stream.aclose()
        await trio.to_thread.run_sync(daemon.kill)
        with trio.fail_after(1):
            while server.clients:
                await trio.sleep(0.01)
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
        await trio.to_thread.run_sync(daemon.restart)
        async with pyvirtrpc.open_connection(via(daemon.uri, path)) as conn:
            assert await conn.get_type() == "TEST"
        nursery.cancel_scope.cancel()


async def test_a_failing_upstream_hop_drops_its_client(
        libvirtd_test_factory: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the upstream hop (here: passing an event on fails) ends the client's
    connection, as a lost upstream does, rather than leaving it on a dead relay session."""

    def broken(self: RelayConnection, prog: int, proc: int, payload: bytes) -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(RelayConnection, "_message", broken)
    daemon = libvirtd_test_factory()
    async with relay_in_process(daemon.uri, tmp_path / "sock") as uri, \
            pyvirtrpc.open_connection(uri) as conn, conn.domain_events(), \
            pyvirtrpc.open_connection(daemon.uri) as direct:
        await (await direct.lookup_domain("test")).suspend()
        with trio.fail_after(1):
            await conn.wait_closed()
        assert "relay: the upstream connection failed" in caplog.text


def test_each_client_has_its_own_upstream_connection_closed_with_it(
        libvirtd_test_factory: Daemons, relay_factory: Relay) -> None:
    import libvirt

    daemon = libvirtd_test_factory()
    relay = relay_factory(daemon.uri)
    assert admin_clients(daemon) == 0
    first, second = libvirt.open(relay.uri), libvirt.openReadOnly(relay.ro_uri)
    assert admin_clients(daemon) == 2
    watcher = VirshEvents(relay.uri, "--all")
    wait_for(lambda: admin_clients(daemon) == 3, "virsh's upstream connection")
    first.close()
    wait_for(lambda: admin_clients(daemon) == 2, "a closed client's upstream connection to go")
    watcher.proc.kill()  # no goodbye at all
    watcher.proc.wait()
    wait_for(lambda: admin_clients(daemon) == 1, "a killed client's upstream connection to go")
    second.close()
    wait_for(lambda: admin_clients(daemon) == 0, "the last upstream connection to go")
    gc.collect()


@pytest.mark.slow
def test_keepalive_on_each_hop_keeps_an_idle_client(
        libvirtd_test: LibvirtdTestDriver, relay_factory: Relay, libvirt_events: Any) -> None:
    relay = relay_factory(libvirtd_test.uri)
    conn = libvirt_events.open(relay.uri)  # with an event loop: keepalive on
    try:
        time.sleep(36)  # past libvirtd's 5 s x (5 + 1) and the relay's own
        assert conn.getHostname() and conn.isAlive()
    finally:
        conn.close()
        gc.collect()


# ------------------------------------------------------------------ policy and audit


def test_read_only_relay_refuses_as_libvirtd_does(
        libvirtd_test: LibvirtdTestDriver, relay_factory: Relay, tmp_path: Path) -> None:
    relay = relay_factory(libvirtd_test.uri, "--read-only")
    xml = tmp_path / "ro.xml"
    xml.write_text(domain_xml("ro"))
    for args in [*read_only_commands(xml), ["dominfo", "test"], ["autostart", "test"],
                 ["screenshot", "test", str(tmp_path / "shot")],
                 ["qemu-monitor-command", "test", "--hmp", "info block"]]:
        assert run(relay.uri, args) == run(libvirtd_test.ro_uri, args, readonly=True), args
    # a procedure pyvirtrpc does not know may write: refused too
    out = virsh(relay.uri, "maxvcpus", check=False)
    assert (out.returncode, out.stderr) == (
        1, "error: operation forbidden: read only access prevents remote:5\n")
    assert virsh(libvirtd_test.uri, "domstate", "test").stdout == "running\n\n"


def test_allow_and_deny_lists(libvirtd_test: LibvirtdTestDriver, relay_factory: Relay) -> None:
    denying = relay_factory(libvirtd_test.uri, "--deny", "DOMAIN_SUSPEND,qemu:1",
                            "--deny", "REMOTE_PROC_DOMAIN_GET_XML_DESC")
    out = virsh(denying.uri, "suspend", "test", check=False)
    assert (out.returncode, out.stderr) == (1, "error: Failed to suspend domain 'test'\nerror: "
                                            "access denied: the relay's policy does not allow "
                                            "virDomainSuspend\n")
    assert "does not allow virDomainQemuMonitorCommand" in virsh(
        denying.uri, "qemu-monitor-command", "test", "--hmp", "info", check=False).stderr
    assert "does not allow virDomainGetXMLDesc" in virsh(
        denying.uri, "dumpxml", "test", check=False).stderr
    assert virsh(denying.uri, "domstate", "test").stdout == "running\n\n"
    allowing = relay_factory(libvirtd_test.uri, "--allow",
                             "CONNECT_LIST_ALL_DOMAINS,DOMAIN_GET_STATE")
    assert run(allowing.uri, ["list", "--all"]) == run(libvirtd_test.uri, ["list", "--all"])
    assert virsh(allowing.uri, "nodeinfo", check=False).stderr.endswith(
        "access denied: the relay's policy does not allow virNodeGetInfo\n")


def test_audit_log(libvirtd_test: LibvirtdTestDriver, relay_factory: Relay) -> None:
    relay = relay_factory(libvirtd_test.uri, "--deny", "DOMAIN_SUSPEND")
    started = time.time()
    virsh(relay.uri, "dominfo", "test")
    virsh(relay.uri, "domblkthreshold", "test", "vda", "1M", check=False)
    virsh(relay.uri, "suspend", "test", check=False)
    virsh(relay.uri, "dominfo", "nope", check=False)
    records = relay.audit()
    raw = relay.audit_path.read_text().splitlines()
    assert len(raw) == len(records) and all(json.loads(line) for line in raw)
    for record in records:
        assert set(record) >= {"time", "client", "peer", "procedure", "domain", "result",
                               "latency_ms"}
        assert record["time"].endswith("Z")
        when = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert abs(when.timestamp() - started) < 60
        assert isinstance(record["client"], int)
        assert re.fullmatch(r"pid \d+ uid 0 gid 0", record["peer"])
        assert isinstance(record["latency_ms"], float) and 0 <= record["latency_ms"] < 5000
    calls = [(r["client"], r["procedure"], r["domain"], r["result"]) for r in records]
    first = records[0]["client"]
    assert calls[:3] == [(first, "CONNECT_OPEN", None, "ok"),
                         (first, "DOMAIN_LOOKUP_BY_NAME", "test", "ok"),
                         (first, "DOMAIN_GET_OS_TYPE", "test", "ok")]
    assert (first, "DOMAIN_GET_INFO", "test", "ok") in calls
    assert (first + 1, "DOMAIN_SET_BLOCK_THRESHOLD", "test", 3) in calls  # NO_SUPPORT
    assert (first + 2, "DOMAIN_SUSPEND", "test", 88) in calls  # ACCESS_DENIED (the policy)
    assert (first + 3, "DOMAIN_LOOKUP_BY_NAME", "nope", 42) in calls  # NO_DOMAIN
    refused = next(r for r in records if r["result"] == 88)
    assert refused["error"] == ("access denied: the relay's policy does not allow "
                                "virDomainSuspend")
    assert len({r["peer"] for r in records}) == 4  # four virsh processes
