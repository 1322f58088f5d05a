"""The relay for the tests: ``pyvirtrpc relay`` (the command) in front of a real daemon.

- :class:`RelayProcess`: the command in its own process, on ``relay-sock`` and
  ``relay-sock-ro`` in a folder, with an audit log; stopped by its pid (SIGTERM).
- ``relay_factory``: call it with the upstream URI (and more command-line options) for a
  relay that is stopped when the test ends.
- :func:`via`: a daemon's URI, pointed at a relay's socket instead.
- :func:`admin_clients`: how many clients a test-driver libvirtd has (virt-admin), to see
  the relay's upstream connections come and go.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from realdaemons import LibvirtdTestDriver, can_connect, tail, tool, virsh_env, wait_until


class RelayProcess:
    """``python -m pyvirtrpc relay --upstream UPSTREAM OPTIONS...`` in ``directory``.

    ``command``: what runs ``-m pyvirtrpc`` (default: this Python); ``audit``: keep an
    audit log (``audit_path``).
    """

    def __init__(self, upstream: str, directory: Path, *options: str,
                 command: tuple[str, ...] = (sys.executable,), audit: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.upstream = upstream
        self.socket = directory / "relay-sock"
        self.ro_socket = directory / "relay-sock-ro"
        self.audit_path = directory / "audit.jsonl"
        self.stderr_path = directory / "relay.stderr"
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [*command, "-m", "pyvirtrpc", "relay", "--socket", str(self.socket),
                 "--ro-socket", str(self.ro_socket), "--upstream", upstream,
                 *(["--audit", str(self.audit_path)] if audit else []), *options],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )
        proc = self.proc
        try:
            wait_until(lambda: can_connect(self.socket) and can_connect(self.ro_socket),
                       lambda: proc.poll() is None, "pyvirtrpc relay did not start",
                       [self.stderr_path])
        except BaseException:
            self.stop()
            raise

    @property
    def uri(self) -> str:
        return via(self.upstream, self.socket)

    @property
    def ro_uri(self) -> str:
        return via(self.upstream, self.ro_socket)

    def audit(self) -> list[dict[str, Any]]:
        """The audit log's records so far."""
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [json.loads(line) for line in lines]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, tail(self.stderr_path)


def via(uri: str, socket: Path) -> str:
    """``uri`` with its ``socket=`` parameter pointing at ``socket``."""
    return re.sub(r"([?&])socket=[^&]*", lambda m: f"{m.group(1)}socket={socket}", uri)


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    relays: list[RelayProcess] = []

    def make(upstream: str, *options: str) -> RelayProcess:
        relay = RelayProcess(upstream, tmp_path / f"relay{len(relays)}", *options)
        relays.append(relay)
        return relay

    try:
        yield make
    finally:
        for relay in relays:
            relay.stop()


def admin_clients(daemon: LibvirtdTestDriver) -> int:
    """The clients connected to ``daemon`` now (``virt-admin srv-clients-list``)."""
    result = subprocess.run(
        [tool("virt-admin"), "-c", f"libvirtd:///system?socket={daemon.admin_socket}",
         "srv-clients-list", "libvirtd"],
        capture_output=True, text=True, env=virsh_env(), timeout=30, check=True,
    )
    return sum(1 for line in result.stdout.splitlines() if re.match(r"\s*\d+\s", line))
