"""Block-threshold events from a real qemu, through a real libvirtd, to the Trio client.

Everything goes through pyvirtrpc: define and start the thin domain, arm the threshold,
make qemu write with the QEMU program's monitor command, read domain stats, receive the
event. The threshold compares the *host* offset in the overlay (``block.0.allocation``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from realdaemons import THIN_DISK_QOM_PATH, LibvirtdQemuSession

import pyvirtrpc
from pyvirtrpc import Domain, DomainEventID
from pyvirtrpc.client import EventStream
from pyvirtrpc.events import BlockThresholdEvent

pytestmark = [pytest.mark.libvirtd, pytest.mark.qemu]

STATS_BLOCK = 32  # VIR_DOMAIN_STATS_BLOCK
MiB = 2**20


async def write(dom: Domain, offset_mib: int, length_mib: int = 4) -> None:
    """Make qemu write to the disk from the host side (HMP qemu-io)."""
    out = await dom.qemu_monitor_command(
        f'qemu-io -d {THIN_DISK_QOM_PATH} "write -P 0x5a {offset_mib}M {length_mib}M"',
        hmp=True,
    )
    assert out.strip() == ""  # qemu-io prints only when it fails


async def block_stats(dom: Domain) -> dict[str, object]:
    return {k: v for k, v in (await dom.stats(STATS_BLOCK)).items() if k.startswith("block.0.")}


async def next_threshold_event(events: EventStream) -> BlockThresholdEvent:
    with trio.fail_after(30):
        event = await events.receive()
    assert isinstance(event, BlockThresholdEvent), event
    return event


@pytest.fixture
async def thin_domain(libvirtd_qemu: LibvirtdQemuSession) -> AsyncIterator[tuple[Domain, str]]:
    xml, top = libvirtd_qemu.make_thin_domain("pyvirtrpc-client-thin")
    async with pyvirtrpc.open_connection(libvirtd_qemu.uri) as conn:
        dom = await conn.define_domain(xml)
        await dom.start()
        try:
            yield dom, str(top)
        finally:
            with trio.CancelScope(shield=True):
                await dom.destroy()
                await dom.undefine()


async def test_block_threshold_event_one_shot_rearm_and_index(
    thin_domain: tuple[Domain, str],
) -> None:
    dom, top = thin_domain
    conn = dom.conn
    assert await conn.get_type() == "QEMU"
    async with conn.domain_events(DomainEventID.BLOCK_THRESHOLD, domain=dom) as events:
        # 1. Arm above the current allocation; a 4 MiB write goes past it.
        before = await block_stats(dom)
        assert before["block.0.path"] == top
        threshold = int(before["block.0.allocation"]) + MiB  # type: ignore[call-overload]
        await dom.set_block_threshold("vda", threshold)
        assert (await block_stats(dom))["block.0.threshold"] == threshold
        await write(dom, 32)
        first = await next_threshold_event(events)
        second = await next_threshold_event(events)  # no index given: also as vda[1]
        assert {first.dev, second.dev} == {"vda", "vda[1]"}
        after = await block_stats(dom)
        allocation = int(after["block.0.allocation"])  # type: ignore[call-overload]
        for event in (first, second):
            assert event.domain.name == dom.name and event.domain.uuid == dom.ref.uuid
            assert event.path == top
            assert event.threshold == threshold
            assert 0 < event.excess <= 4 * MiB
            assert threshold + event.excess <= allocation
        # 2. One-shot: the threshold is gone from the stats.
        assert "block.0.threshold" not in after

        # 3. Re-arm: it fires again.
        threshold = allocation + MiB
        await dom.set_block_threshold("vda", threshold)
        await write(dom, 40)
        again = {(await next_threshold_event(events)).dev for _ in range(2)}
        assert again == {"vda", "vda[1]"}
        assert "block.0.threshold" not in await block_stats(dom)

        # 4. The vda[1] form: only the indexed event.
        allocation = int((await block_stats(dom))["block.0.allocation"])  # type: ignore[call-overload]
        threshold = allocation + MiB
        await dom.set_block_threshold("vda[1]", threshold)
        await write(dom, 48)
        indexed = await next_threshold_event(events)
        assert (indexed.dev, indexed.path, indexed.threshold) == ("vda[1]", top, threshold)
        assert indexed.excess > 0
        with trio.move_on_after(1):
            extra = await events.receive()
            pytest.fail(f"a threshold set with an index fired twice: {extra}")


async def test_block_threshold_as_a_percentage(thin_domain: tuple[Domain, str]) -> None:
    dom, _ = thin_domain
    capacity = (await dom.block_info("vda")).capacity
    allocation = int((await block_stats(dom))["block.0.allocation"])  # type: ignore[call-overload]
    percent = round((allocation + MiB) / capacity * 100, 3)
    expected = capacity * round(percent * 1000) // 100_000
    async with dom.conn.domain_events(DomainEventID.BLOCK_THRESHOLD, domain=dom) as events:
        await dom.set_block_threshold("vda[1]", percent=percent)
        assert (await block_stats(dom))["block.0.threshold"] == expected
        await write(dom, 56)
        event = await next_threshold_event(events)
        assert (event.dev, event.threshold) == ("vda[1]", expected)
    with pytest.raises(pyvirtrpc.InvalidArgError):
        await dom.set_block_threshold("vda", percent=100.5)
    await dom.set_block_threshold("vda", percent=100)
    assert (await block_stats(dom))["block.0.threshold"] == capacity
    await dom.set_block_threshold("vda", 0)  # 0 clears it
    assert "block.0.threshold" not in await block_stats(dom)
