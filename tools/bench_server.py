#!/usr/bin/env python3
"""Benchmark the server (with the mock backend) against libvirtd (test driver), in one run.

    tools/bench_server.py [--seconds 3] [--idle 1000]

1. libvirt-python, one connection, sequential ``dom.info()`` calls per second: against
   ``pyvirtrpc mock`` (its own process) and against a real test-driver libvirtd.
2. The same with 8 threads sharing the connection.
3. Idle clients: how many connections (each past AUTH_LIST and CONNECT_OPEN) each server
   holds while still answering all of them, and the server's memory per idle client
   (its RSS growth divided by the number of clients).

Prints every figure and the ratios ours / libvirtd. Needs libvirtd, virsh and
libvirt-python (tools/test installs them).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import libvirt  # noqa: E402
from realdaemons import LibvirtdTestDriver, can_connect  # noqa: E402

from pyvirtrpc.gen import remote  # noqa: E402
from pyvirtrpc.gen.remote import Procedure as P  # noqa: E402
from pyvirtrpc.sansio.framing import FrameDecoder, encode_packet  # noqa: E402

THREADS = 8


def rate(call: Callable[[], object], seconds: float, threads: int = 1) -> float:
    """Calls per second of ``call`` from ``threads`` threads (best of three rounds)."""
    best = 0.0
    for _ in range(3):
        counts = [0] * threads
        stop = time.perf_counter() + seconds / 3
        start = time.perf_counter()
        workers = [threading.Thread(target=_count_calls, args=(call, stop, counts, i))
                   for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, sum(counts) / (time.perf_counter() - start))
    return best


def _count_calls(call: Callable[[], object], stop: float, counts: list[int], i: int) -> None:
    n = 0
    while time.perf_counter() < stop:
        call()
        n += 1
    counts[i] = n


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def packet(proc: int, serial: int, args: object = None) -> bytes:
    payload = b"" if args is None else args.encode()  # type: ignore[attr-defined]
    return encode_packet(remote.REMOTE_PROGRAM, 1, proc, 0, serial, 0, payload)


def receive(sock: socket.socket, count: int) -> None:
    decoder = FrameDecoder()
    got: list[object] = []
    while len(got) < count:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        got += decoder.feed(data)
    if any(p.status for p in got):  # type: ignore[attr-defined]
        raise RuntimeError(f"error reply: {got}")


def idle_clients(path: Path, pid: int, count: int) -> tuple[int, float]:
    """Open ``count`` clients (AUTH_LIST + CONNECT_OPEN), check each still answers.

    Returns (clients held, KiB of server memory per client).
    """
    before = rss_kib(pid)
    clients: list[socket.socket] = []
    open_args = remote.ConnectOpenArgs("test:///default", 0)
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(str(path))
            sock.sendall(packet(P.AUTH_LIST, 0) + packet(P.CONNECT_OPEN, 1, open_args))
            receive(sock, 2)
            clients.append(sock)
        time.sleep(0.5)
        after = rss_kib(pid)
        for sock in clients:  # all of them still answer
            sock.sendall(packet(P.CONNECT_GET_TYPE, 2))
        for sock in clients:
            receive(sock, 1)
        return len(clients), (after - before) / max(len(clients), 1)
    finally:
        for sock in clients:
            sock.close()


def start_mock(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    sock = directory / "mock-sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvirtrpc", "mock", "--socket", str(sock)],
        cwd=ROOT, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not can_connect(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("pyvirtrpc mock did not start")
        time.sleep(0.05)
    return proc, sock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--idle", type=int, default=1000, help="idle clients to open")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 2 * args.idle + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # children inherit it

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp, \
            LibvirtdTestDriver() as real:
        mock, mock_sock = start_mock(Path(tmp))
        try:
            uris = {"pyvirtrpc mock": f"test+unix:///default?socket={mock_sock}",
                    "libvirtd (test driver)": real.uri}
            results: dict[str, dict[str, float]] = {}
            for name, uri in uris.items():
                conn = libvirt.open(uri)
                dom = conn.lookupByName("test")
                results[name] = {
                    "sequential": rate(dom.info, args.seconds),
                    "threads": rate(dom.info, args.seconds, THREADS),
                }
                conn.close()
            held, per_client = idle_clients(mock_sock, mock.pid, args.idle)
            results["pyvirtrpc mock"]["idle"] = held
            results["pyvirtrpc mock"]["kib"] = per_client
            held, per_client = idle_clients(real.socket, real.pid, args.idle)
            results["libvirtd (test driver)"]["idle"] = held
            results["libvirtd (test driver)"]["kib"] = per_client
        finally:
            mock.terminate()
            mock.wait()

    ours, theirs = results["pyvirtrpc mock"], results["libvirtd (test driver)"]
    print(f"{'':34} {'pyvirtrpc mock':>16} {'libvirtd':>16} {'ratio':>8}")
    rows = [("dom.info() sequential, calls/s", "sequential", "{:16,.0f}"),
            (f"dom.info() {THREADS} threads, calls/s", "threads", "{:16,.0f}"),
            ("idle clients held", "idle", "{:16,.0f}"),
            ("memory per idle client, KiB", "kib", "{:16,.1f}")]
    for label, key, fmt in rows:
        ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
        print(f"{label:34} {fmt.format(ours[key])} {fmt.format(theirs[key])} {ratio:7.2f}x")
    print(f"(target: sequential ratio >= 0.7; {os.cpu_count()} CPUs; best of 3 rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
