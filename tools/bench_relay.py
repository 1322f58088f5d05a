#!/usr/bin/env python3
"""Benchmark: what the relay costs per call, libvirt-python through it versus directly.

Starts a private test-driver libvirtd (tests/realdaemons.py) and ``pyvirtrpc relay`` in
front of it (its own process, as operators run it; no audit log unless ``--audit``), and
measures with libvirt-python (C), on one connection each:

1. sequential ``dom.info()`` calls per second;
2. ``dom.info()`` calls per second from 8 threads sharing the connection.

Rounds alternate between the direct connection and the relayed one; the ratios (relayed
/ direct) compare the medians of the rounds, best rounds shown too. ``--profile FILE``
runs the relay under cProfile and prints where its time went.

    python tools/bench_relay.py [--calls N] [--rounds R] [--audit] [--profile FILE]
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]

import libvirt  # noqa: E402
from bench_client import THREADS, reference, summary  # noqa: E402
from realdaemons import LibvirtdTestDriver  # noqa: E402
from relays import RelayProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--audit", action="store_true", help="the relay keeps an audit log")
    parser.add_argument("--profile", metavar="FILE", help="profile the relay into FILE")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {"direct": [], "relayed": []}
    command: tuple[str, ...] = (sys.executable,)
    if args.profile:
        command = (sys.executable, "-m", "cProfile", "-o", args.profile)
    with LibvirtdTestDriver() as daemon, tempfile.TemporaryDirectory() as folder:
        relay = RelayProcess(daemon.uri, Path(folder), command=command, audit=args.audit)
        keeper = libvirt.open(daemon.uri)  # the test driver keeps its state between rounds
        try:
            for round_no in range(1, args.rounds + 1):
                for name, uri in (("direct", daemon.uri), ("relayed", relay.uri)):
                    seq, conc = reference(uri, args.calls)
                    runs[name].append((seq, conc))
                    print(f"round {round_no} {name:8} sequential {seq:9.0f}/s   "
                          f"{THREADS} threads {conc:9.0f}/s", flush=True)
        finally:
            keeper.close()
            relay.stop()
    print()
    for index, what in ((0, "sequential dom.info()"), (1, f"dom.info() from {THREADS} threads")):
        rel_med, rel_best = summary(runs["relayed"], index)
        dir_med, dir_best = summary(runs["direct"], index)
        print(f"{what}: relayed {rel_med:7.0f}/s (best {rel_best:.0f})  "
              f"direct {dir_med:7.0f}/s (best {dir_best:.0f})  "
              f"ratio {rel_med / dir_med:.2f}x (best vs best {rel_best / dir_best:.2f}x)")
    if args.profile:
        print(f"\nthe relay's profile ({args.profile}), by own time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
