"""The client over TCP and TLS to a real libvirtd listening on 127.0.0.1.

The x509 credentials are made here with the openssl command, with the key usages and
purposes libvirt's own checks want (a CA, a server certificate for 127.0.0.1, a client
certificate); libvirtd checks our client certificate after the handshake and answers
with one byte.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from realdaemons import LibvirtdTestDriver, tool

import pyvirtrpc
from pyvirtrpc import RemoteError
from pyvirtrpc.errors import ErrorNumber
from pyvirtrpc.transport import TransportError

pytestmark = pytest.mark.libvirtd

CA_EXT = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
SERVER_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
CLIENT_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n")


def _openssl(*args: str) -> None:
    result = subprocess.run([tool("openssl"), *args], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {result.stderr}")


def _make_pki(folder: Path) -> None:
    """cacert.pem/cakey.pem, servercert.pem/serverkey.pem, clientcert.pem/clientkey.pem."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.ext").write_text(CA_EXT)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=pyvirtrpc test CA", "-keyout", str(folder / "cakey.pem"),
             "-out", str(folder / "cacert.pem"), "-addext", CA_EXT.splitlines()[0],
             "-addext", CA_EXT.splitlines()[1])
    for name, ext in (("server", SERVER_EXT), ("client", CLIENT_EXT)):
        (folder / f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=pyvirtrpc {name}",
                 "-keyout", str(folder / f"{name}key.pem"), "-out", str(folder / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(folder / f"{name}.csr"), "-days", "2",
                 "-CA", str(folder / "cacert.pem"), "-CAkey", str(folder / "cakey.pem"),
                 "-CAcreateserial", "-extfile", str(folder / f"{name}.ext"),
                 "-out", str(folder / f"{name}cert.pem"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Listening:
    def __init__(self, daemon: LibvirtdTestDriver, pki: Path, tcp: int, tls: int) -> None:
        self.daemon, self.pki, self.tcp_port, self.tls_port = daemon, pki, tcp, tls


@pytest.fixture(scope="module")
def listening(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listening]:
    pki = tmp_path_factory.mktemp("pki")
    _make_pki(pki)
    tcp, tls = _free_port(), _free_port()
    config = (
        'listen_tcp = 1\nlisten_tls = 1\nlisten_addr = "127.0.0.1"\n'
        f'tcp_port = "{tcp}"\ntls_port = "{tls}"\nauth_tcp = "none"\nauth_tls = "none"\n'
        f'ca_file = "{pki}/cacert.pem"\ncert_file = "{pki}/servercert.pem"\n'
        f'key_file = "{pki}/serverkey.pem"\n'
    )
    daemon = LibvirtdTestDriver(extra_config=config, listen=True)
    try:
        daemon.start()
    except Exception as exc:
        daemon.close()
        pytest.fail(f"real libvirt peer unavailable: {exc}", pytrace=False)
    try:
        yield Listening(daemon, pki, tcp, tls)
    finally:
        daemon.close()


def _client_pki(listening: Listening, folder: Path, *, with_cert: bool) -> Path:
    folder.mkdir()
    shutil.copy(listening.pki / "cacert.pem", folder / "cacert.pem")
    if with_cert:
        shutil.copy(listening.pki / "clientcert.pem", folder / "clientcert.pem")
        shutil.copy(listening.pki / "clientkey.pem", folder / "clientkey.pem")
    return folder


async def test_tcp(listening: Listening) -> None:
    uri = f"test+tcp://127.0.0.1:{listening.tcp_port}/default"
    async with pyvirtrpc.open_connection(uri) as conn:
        dom = await conn.lookup_domain("test")
        assert (await dom.info()).max_mem == 8388608
        assert await conn.get_type() == "TEST"


async def test_tls_with_a_client_certificate(listening: Listening, tmp_path: Path) -> None:
    pki = _client_pki(listening, tmp_path / "pki", with_cert=True)
    uri = f"test+tls://127.0.0.1:{listening.tls_port}/default?pkipath={pki}"
    async with pyvirtrpc.open_connection(uri) as conn:
        dom = await conn.lookup_domain("test")
        assert (await dom.info()).max_mem == 8388608


async def test_tls_server_refuses_us_without_a_certificate(listening: Listening,
                                                          tmp_path: Path) -> None:
    pki = _client_pki(listening, tmp_path / "pki", with_cert=False)
    uri = f"test+tls://127.0.0.1:{listening.tls_port}/default?pkipath={pki}"
    with pytest.raises(RemoteError, match="server verification") as info:
        async with pyvirtrpc.open_connection(uri):
            pass
    assert info.value.code == ErrorNumber.RPC


async def test_tls_checks_the_server_name_unless_no_verify(listening: Listening,
                                                          tmp_path: Path) -> None:
    pki = _client_pki(listening, tmp_path / "pki", with_cert=True)
    uri = f"test+tls://localhost:{listening.tls_port}/default?pkipath={pki}"  # cert: 127.0.0.1
    with pytest.raises(TransportError, match="certificate verify failed") as info:
        async with pyvirtrpc.open_connection(uri):
            pass
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    async with pyvirtrpc.open_connection(uri + "&no_verify=1") as conn:
        assert await conn.get_type() == "TEST"


async def test_tls_needs_the_ca_certificate(tmp_path: Path) -> None:
    uri = f"test+tls://127.0.0.1:1/default?pkipath={tmp_path}"
    with pytest.raises(pyvirtrpc.Error, match="Cannot read CA certificate"):
        async with pyvirtrpc.open_connection(uri):
            pass
