#!/usr/bin/env python3
"""Benchmark: pyvirtrpc's client against libvirt-python (C), same libvirtd, same run.

Starts a private test-driver libvirtd (tests/realdaemons.py) and measures, on one
connection each:

1. sequential ``get_info`` calls per second: ``await dom.info()`` vs ``dom.info()``;
2. concurrent calls per second: 16 Trio tasks on one connection vs libvirt-python with
   8 threads on one connection.

Rounds alternate between the two clients; the ratios compare the medians of the rounds
(the machine is shared, and single rounds of either client can be far off), with the
best rounds shown too. Prints both ratios (ours / reference; the target is at least 1.0x).

    python tools/bench_client.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import libvirt  # noqa: E402
from realdaemons import LibvirtdTestDriver  # noqa: E402

import pyvirtrpc  # noqa: E402

TASKS = 16
THREADS = 8


def ours(uri: str, calls: int) -> tuple[float, float]:
    async def run() -> tuple[float, float]:
        async with pyvirtrpc.open_connection(uri) as conn:
            dom = await conn.lookup_domain("test")
            for _ in range(200):  # warm up
                await dom.info()
            start = time.perf_counter()
            for _ in range(calls):
                await dom.info()
            sequential = calls / (time.perf_counter() - start)

            async def worker(n: int) -> None:
                for _ in range(n):
                    await dom.info()

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(TASKS):
                    nursery.start_soon(worker, calls // TASKS)
            concurrent = (calls // TASKS * TASKS) / (time.perf_counter() - start)
            return sequential, concurrent

    return trio.run(run)


def reference(uri: str, calls: int) -> tuple[float, float]:
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName("test")
        for _ in range(200):
            dom.info()
        start = time.perf_counter()
        for _ in range(calls):
            dom.info()
        sequential = calls / (time.perf_counter() - start)

        def worker(n: int) -> None:
            for _ in range(n):
                dom.info()

        threads = [threading.Thread(target=worker, args=(calls // THREADS,))
                   for _ in range(THREADS)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent = (calls // THREADS * THREADS) / (time.perf_counter() - start)
        return sequential, concurrent
    finally:
        conn.close()


def summary(results: list[tuple[float, float]], index: int) -> tuple[float, float]:
    """(median, best) of one measure over the rounds."""
    values = [r[index] for r in results]
    return statistics.median(values), max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {"pyvirtrpc": [], "libvirt-python": []}
    clients: dict[str, Callable[[str, int], tuple[float, float]]] = {
        "pyvirtrpc": ours, "libvirt-python": reference,
    }
    with LibvirtdTestDriver() as daemon:
        # Hold a connection open so the test driver keeps its state between rounds.
        keeper = libvirt.open(daemon.uri)
        try:
            for round_no in range(1, args.rounds + 1):
                for name, client in clients.items():
                    seq, conc = client(daemon.uri, args.calls)
                    runs[name].append((seq, conc))
                    print(f"round {round_no} {name:15} sequential {seq:9.0f}/s   "
                          f"concurrent {conc:9.0f}/s")
        finally:
            keeper.close()
    print()
    measures = ((0, "sequential get_info", ""),
                (1, "concurrent get_info", f" ({TASKS} tasks vs {THREADS} threads)"))
    for index, what, detail in measures:
        ours_med, ours_best = summary(runs["pyvirtrpc"], index)
        ref_med, ref_best = summary(runs["libvirt-python"], index)
        print(f"{what}{detail}: pyvirtrpc {ours_med:7.0f}/s (best {ours_best:.0f})  "
              f"libvirt-python {ref_med:7.0f}/s (best {ref_best:.0f})  "
              f"ratio {ours_med / ref_med:.2f}x (best vs best {ours_best / ref_best:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
