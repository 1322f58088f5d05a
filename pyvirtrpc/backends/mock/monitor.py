"""The mock's qemu monitor (virDomainQemuMonitorCommand), speaking as qemu 7.2 answers.

HMP commands (``--hmp``):

- ``qemu-io [-d] DEVICE "write [-P PATTERN] OFFSET LENGTH"``: the guest writes to a
  disk, which allocates on the thin disk and may fire its block threshold. ``DEVICE`` is
  the disk's QOM path (``/machine/peripheral/virtio-disk0/virtio-backend``, with
  ``-d``), its device alias (``virtio-disk0``), or its node name (``libvirt-1-format``).
  As with qemu, qemu-io prints nothing, even when its command fails.
- ``info block [DEVICE]``, ``info status``, ``info name``.

QMP commands (without ``--hmp``): ``human-monitor-command``, ``query-name``,
``query-status``; any other gets qemu's CommandNotFound error object.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shlex
from typing import Any

from pyvirtrpc.backends.mock.disk import NoSpace
from pyvirtrpc.backends.mock.hypervisor import DomainState, MockDomain, MockHypervisor
from pyvirtrpc.errors import ErrorDomain, ErrorNumber, RemoteError

__all__ = ["TAINT_MESSAGE", "monitor_command", "parse_size"]

log = logging.getLogger(__name__)

TAINT_MESSAGE = "tainted: custom monitor control commands issued"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bkmgtpe]?)$", re.IGNORECASE)
_SCALE = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
          "p": 1 << 50, "e": 1 << 60}
_QMP_IDS = itertools.count(1)


def parse_size(text: str) -> int:
    """A qemu-io size: bytes, or with a binary suffix (``32M``, ``4k``, ``1.5G``)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}")
    number, suffix = match.groups()
    return int(float(number) * _SCALE[suffix.lower()])


def monitor_command(hypervisor: MockHypervisor, domain: MockDomain, command: str,
                    hmp: bool) -> str:
    """Run a monitor command on a running domain; returns qemu's reply text."""
    if hmp:
        return _hmp(hypervisor, domain, command)
    try:
        request = json.loads(command)
        name = request["execute"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError.report(ErrorNumber.INTERNAL_ERROR, ErrorDomain.NONE,
                                 f"cannot parse json {command}: {exc}") from None
    ident = f"libvirt-{next(_QMP_IDS)}"
    arguments = request.get("arguments") or {}
    result: Any
    if name == "human-monitor-command":
        result = _hmp(hypervisor, domain, str(arguments.get("command-line", "")))
    elif name == "query-name":
        result = {"name": domain.name}
    elif name == "query-status":
        running = domain.state == DomainState.RUNNING
        result = {"status": "running" if running else "paused", "singlestep": False,
                  "running": running}
    else:
        error = {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}
        return json.dumps({"id": ident, "error": error}, separators=(",", ":"))
    return json.dumps({"return": result, "id": ident}, separators=(",", ":"))


def _hmp(hypervisor: MockHypervisor, domain: MockDomain, command: str) -> str:
    words = command.split()
    if not words:
        return ""
    if words[0] == "qemu-io":
        return _qemu_io(hypervisor, domain, command[len("qemu-io"):])
    if words[0] == "info" and len(words) > 1:
        if words[1] == "block":
            return _info_block(domain, words[2:])
        if words[1] == "status":
            status = "running" if domain.state == DomainState.RUNNING else "paused"
            return f"VM status: {status}\r\n"
        if words[1] == "name":
            return f"{domain.name}\r\n"
    return f"unknown command: '{' '.join(words[:2])}'\r\n"


_QEMU_IO_USAGE = 'qemu-io: string expected\r\nTry "help qemu-io" for more information\r\n'


def _qemu_io(hypervisor: MockHypervisor, domain: MockDomain, rest: str) -> str:
    try:
        args = shlex.split(rest)
    except ValueError:
        return _QEMU_IO_USAGE
    if args and args[0] == "-d":
        args = args[1:]
    if len(args) != 2:
        return _QEMU_IO_USAGE
    device, io_command = args
    target = _device_target(domain, device)
    if target is None:
        return f"Error: Device '{device}' not found\r\n"
    try:
        _run_qemu_io(hypervisor, domain, target, io_command)
    except (ValueError, NoSpace) as exc:  # qemu-io reports on qemu's stderr, not here
        log.warning("qemu-io %r on %s: %s", io_command, domain.name, exc)
    return ""


def _run_qemu_io(hypervisor: MockHypervisor, domain: MockDomain, target: str,
                 io_command: str) -> None:
    words = io_command.split()
    if not words or words[0] not in ("write", "aio_write"):
        raise ValueError("only qemu-io's write command is implemented")
    operands: list[str] = []
    options = iter(words[1:])
    for word in options:
        if word in ("-P", "-s", "-l"):
            next(options, None)  # the pattern or a pattern file: content is not kept
        elif not word.startswith("-"):
            operands.append(word)
    if len(operands) != 2:
        raise ValueError("write needs an offset and a length")
    hypervisor.write(domain, target, parse_size(operands[0]), parse_size(operands[1]))


def _device_target(domain: MockDomain, device: str) -> str | None:
    """The disk target a qemu device name refers to."""
    for target in domain.disks:
        alias = domain.alias(target)
        top, _ = domain.image_index.get(target, (0, 0))
        names = {alias, f"/machine/peripheral/{alias}/virtio-backend",
                 f"/machine/peripheral/{alias}", f"libvirt-{top}-format"}
        if device in names:
            return target
    return None


def _info_block(domain: MockDomain, args: list[str]) -> str:
    chosen = [a for a in args if not a.startswith("-")]
    entries = []
    for target, disk in domain.disks.items():
        top, depth = domain.image_index.get(target, (0, 0))
        node = f"libvirt-{top}-format"
        alias = domain.alias(target)
        if chosen and chosen[0] not in (node, alias):
            continue
        lines = [f"{node}: {disk.path} ({disk.format})",
                 f"    Attached to:      /machine/peripheral/{alias}/virtio-backend",
                 "    Cache mode:       writeback"]
        backing = _backing_path(domain, target)
        if backing is not None:
            lines.append(f"    Backing file:     {backing} (chain depth: {depth})")
        entries.append("".join(f"{line}\r\n" for line in lines))
    return "\r\n".join(entries)


def _backing_path(domain: MockDomain, target: str) -> str | None:
    for dev, element in domain.definition.disks():
        if dev == target:
            source = element.find("backingStore/source")
            if source is not None:
                return source.get("file") or source.get("dev")
    return None
