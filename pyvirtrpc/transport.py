"""Trio byte streams to a libvirt daemon, from a parsed URI.

- ``unix``: the socket the URI names (or libvirt's default, see :mod:`pyvirtrpc.uri`);
- ``tcp``: plain TCP, port 16509 by default;
- ``tls``: TCP, port 16514, x509 credentials from ``?pkipath=`` or libvirt's default
  places (``~/.pki/libvirt`` for non-root users, then ``/etc/pki/CA/cacert.pem``,
  ``/etc/pki/libvirt/clientcert.pem`` and ``/etc/pki/libvirt/private/clientkey.pem``);
  ``?no_verify=1`` skips checking the server's certificate. After the handshake the
  server checks *our* certificate and address and sends one byte, 1 when we passed;
- ``ssh``: the system ``ssh`` (or ``?command=``) runs ``virt-ssh-helper URI`` or
  ``nc -U SOCKET`` on the far side, with the arguments libvirt gives it;
- ``ext``: ``?command=`` is run and spoken to over its stdin and stdout.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import trio

from pyvirtrpc.errors import Error, ErrorDomain, ErrorNumber, RemoteError
from pyvirtrpc.uri import ParsedURI, Proxy, Transport

PKI_DIR = "/etc/pki"
_SHELL_SPECIAL = set("\r\t\n !\"#$&'()*;<>?[\\]^`{|}~")
_PROCESS_EXIT_WAIT = 1.0


class TransportError(Error):
    """The transport could not be set up (an unsupported transport, TLS refused...)."""


async def open_transport(target: ParsedURI) -> trio.abc.Stream:
    """Connect to the daemon ``target`` names; the caller owns (and closes) the stream."""
    transport = target.transport
    if transport is Transport.UNIX:
        assert target.socket is not None
        return await trio.open_unix_socket(target.socket)
    if transport is Transport.TCP:
        assert target.port is not None
        return await trio.open_tcp_stream(target.hostname, target.port)
    if transport is Transport.TLS:
        return await open_tls(target, tls_context(target))
    if transport is Transport.SSH:
        return await ProcessStream.start(ssh_command(target))
    if transport is Transport.EXT:
        return await ProcessStream.start([target.options["command"]])
    raise TransportError(
        f"transport '{transport}' is libvirt's built-in ssh client; pyvirtrpc runs the "
        "system ssh instead: use a '+ssh' URI"
    )


# ----------------------------------------------------------------------------- TLS


def pki_files(target: ParsedURI, euid: int | None = None, home: str | None = None
              ) -> dict[str, str]:
    """Where libvirt's client looks for ``cacert``, ``cacrl``, ``cert`` and ``key``."""
    names = {"cacert": "cacert.pem", "cacrl": "cacrl.pem", "cert": "clientcert.pem",
             "key": "clientkey.pem"}
    pkipath = target.options.get("pkipath")
    if pkipath:  # used whether or not the files exist
        return {what: os.path.join(pkipath, name) for what, name in names.items()}
    files: dict[str, str] = {}
    if (os.geteuid() if euid is None else euid) != 0:
        user_dir = os.path.join(home or str(Path.home()), ".pki", "libvirt")
        found = {w: os.path.join(user_dir, n) for w, n in names.items()}
        files.update({w: found[w] for w in ("cacert", "cacrl") if os.path.exists(found[w])})
        if os.path.exists(found["cert"]) and os.path.exists(found["key"]):
            files.update(cert=found["cert"], key=found["key"])
    files.setdefault("cacert", f"{PKI_DIR}/CA/cacert.pem")
    files.setdefault("cacrl", f"{PKI_DIR}/CA/cacrl.pem")
    if "cert" not in files:
        files.update(cert=f"{PKI_DIR}/libvirt/clientcert.pem",
                     key=f"{PKI_DIR}/libvirt/private/clientkey.pem")
    return files


def tls_context(target: ParsedURI, files: dict[str, str] | None = None) -> ssl.SSLContext:
    """An SSL context with libvirt's client credentials for ``target``."""
    files = pki_files(target) if files is None else files
    cacert = files["cacert"]
    if not os.access(cacert, os.R_OK):
        raise TransportError(f"Cannot read CA certificate '{cacert}': No such file or directory")
    context = ssl.create_default_context(cafile=cacert)
    if os.path.exists(files["cacrl"]):
        context.load_verify_locations(cafile=files["cacrl"])
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if os.path.exists(files["cert"]) and os.path.exists(files["key"]):
        context.load_cert_chain(files["cert"], files["key"])
    if not target.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def open_tls(target: ParsedURI, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    """TCP, the TLS handshake, then the server's verdict on us: one byte, 1 = accepted."""
    assert target.port is not None
    tcp = await trio.open_tcp_stream(target.hostname, target.port)
    stream = trio.SSLStream(tcp, context, server_hostname=target.hostname)
    try:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            raise TransportError(
                f"TLS handshake with {target.hostname}:{target.port} failed: {exc.__cause__}"
            ) from exc.__cause__
        try:
            verdict = await stream.receive_some(1)
        except trio.BrokenResourceError:
            verdict = b""  # the server hung up instead of answering: it refused us
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    if verdict != b"\x01":
        await trio.aclose_forcefully(stream)
        raise RemoteError.report(
            ErrorNumber.RPC, ErrorDomain.RPC,
            "server verification (of our certificate or IP address) failed",
        )
    return stream


# ----------------------------------------------------------------------------- ssh


def shell_escape(text: str) -> str:
    """Quote ``text`` for sh when it holds special characters, as libvirt does."""
    if not text:
        return "''"
    if not _SHELL_SPECIAL.intersection(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def ssh_remote_command(target: ParsedURI) -> str:
    """The command ssh runs on the far side: virt-ssh-helper and/or nc, in sh."""

    def twice(text: str) -> str:  # the ssh server's shell, then our own sh -c
        return shell_escape(shell_escape(text))

    netcat = target.options.get("netcat")
    netcat_safe = twice(netcat or "nc")
    nc = (
        f"if '{netcat_safe}' -q 2>&1 | grep \"requires an argument\" >/dev/null 2>&1; then "
        "ARG=-q0;else ARG=;fi;"
        f"'{netcat_safe}' $ARG -U {target.socket}"
    )
    helper = f"virt-ssh-helper{' -r ' if target.readonly else ' '}'{twice(target.name)}'"
    proxy = target.proxy
    if proxy is Proxy.NETCAT:
        return f"sh -c '{nc}'"
    if proxy is Proxy.NATIVE:
        return f"sh -c '{helper}'"
    return (
        "sh -c 'which virt-ssh-helper 1>/dev/null 2>&1; if test $? = 0; then "
        f"    {helper}; else    {nc}; fi'"
    )


def ssh_command(target: ParsedURI) -> list[str]:
    """The ssh command line libvirt runs for an ``ssh`` URI."""
    argv = [target.options.get("command") or "ssh"]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    if "keyfile" in target.options:
        argv += ["-i", target.options["keyfile"]]
    argv += ["-T", "-e", "none"]
    if not target.tty:
        argv += ["-o", "BatchMode=yes"]
    if not target.verify:
        argv += ["-o", "StrictHostKeyChecking=no"]
    return [*argv, "--", target.hostname, ssh_remote_command(target)]


class ProcessStream(trio.abc.Stream):
    """A child process's stdin and stdout as one stream; closing it ends the process."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stream = trio.StapledStream(process.stdin, process.stdout)

    @classmethod
    async def start(cls, argv: list[str]) -> ProcessStream:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        return cls(process)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Close the pipes, then SIGTERM the process if it does not exit by itself."""
        try:
            await trio.aclose_forcefully(self._stream)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(_PROCESS_EXIT_WAIT):
                    await self.process.wait()
                if self.process.returncode is None:
                    self.process.terminate()
                    with trio.move_on_after(_PROCESS_EXIT_WAIT):
                        await self.process.wait()
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
