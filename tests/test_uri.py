"""Connection URIs as libvirt's remote driver reads them.

The names sent in CONNECT_OPEN are also checked against real libvirt (libvirt-python
connecting to a fake daemon) in test_client_names_libvirt.py.
"""

from __future__ import annotations

import pytest

from pyvirtrpc.uri import TCP_PORT, TLS_PORT, Proxy, Transport, URIError, parse_uri, split_query

ROOT = {"euid": 0, "environ": {}, "exists": lambda path: False}
USER = {"euid": 1000, "environ": {"XDG_RUNTIME_DIR": "/run/user/1000"}, "exists": lambda p: False}


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("test:///default", "test:///default"),
        ("test+unix:///default?socket=/tmp/s", "test:///default"),
        ("qemu:///system", "qemu:///system"),
        ("qemu+unix:///session?socket=/x/libvirt-sock", "qemu:///session"),
        ("qemu+ssh://root@host.example:2222/system", "qemu:///system"),
        ("qemu+tcp://host/system?foo=bar&socket=/s&baz=1", "qemu:///system?foo=bar&baz=1"),
        ("qemu+tls://host/system?no_verify=1&pkipath=/p&x=a%20b", "qemu:///system?x=a%20b"),
        ("qemu+ssh://h/system?keyfile=/k&no_tty=1&netcat=/nc&known_hosts=/kh", "qemu:///system"),
        ("qemu+ssh://h/system?known_hosts_verify=auto&sshauth=agent&proxy=netcat",
         "qemu:///system"),
        ("qemu:///system?mode=legacy&auth=polkit&authfile=/a&command=ssh&tls_priority=N",
         "qemu:///system"),
        ("qemu:///system?SOCKET=/s&No_Verify=1&Name=", ""),  # names match case-insensitively
        ("qemu:///system?name=qemu:///embed", "qemu:///embed"),
        ("remote:///", ""),
        ("remote+unix:///?socket=/s", ""),
        ("remote://host/", ""),
        ("xen://[::1]:99/", "xen:///"),
        ("qemu+tcp://h", "qemu://"),  # no path at all
        ("test:default", "test://default"),  # libxml2 puts // before a path when no host
        ("qemu:///a%20b:c@d;e=f+g$h,i(j)k!~*'", "qemu:///a%20b%3Ac@d;e=f+g$h,i(j)k!~*'"),
        ("qemu:///%E2%82%AC", "qemu:///%E2%82%AC"),
        ("qemu:///system#fr%20ag?x", "qemu:///system#fr%20ag?x"),
        ("qemu:///system?a=%2F+~.&b&=skipped&c=", "qemu:///system?a=%2F%2B~.&b=&c="),
        ("qemu:///system?a=1;b=2", "qemu:///system?a=1&b=2"),
        ("qemu:///system?a=1;b=2&c=3", "qemu:///system?a=1%3Bb%3D2&c=3"),
        ("Test+UNIX:///default", "Test:///default"),
    ],
)
def test_connect_open_name(uri: str, name: str) -> None:
    assert parse_uri(uri, **ROOT).name == name  # type: ignore[arg-type]


def test_no_uri_asks_the_server() -> None:
    parsed = parse_uri(None, **ROOT)  # type: ignore[arg-type]
    assert (parsed.name, parsed.transport, parsed.socket) == (
        "",
        Transport.UNIX,
        "/var/run/libvirt/libvirt-sock",
    )
    assert parse_uri(None, readonly=True, **ROOT).socket.endswith("libvirt-sock-ro")  # type: ignore[arg-type, union-attr]
    assert parse_uri("", **USER).socket == "/run/user/1000/libvirt/libvirt-sock"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uri", "transport", "host", "port"),
    [
        ("qemu:///system", Transport.UNIX, None, None),
        ("qemu+unix:///system", Transport.UNIX, None, None),
        ("qemu://host/system", Transport.TLS, "host", TLS_PORT),
        ("qemu+tls://host/system", Transport.TLS, "host", TLS_PORT),
        ("qemu+tls://host:1234/system", Transport.TLS, "host", 1234),
        ("qemu+tcp://host/system", Transport.TCP, "host", TCP_PORT),
        ("qemu+tcp:///system", Transport.TCP, None, TCP_PORT),
        ("qemu+tcp://[fe80::1]:77/system", Transport.TCP, "fe80::1", 77),
        ("qemu+ssh://u@host/system", Transport.SSH, "host", None),
        ("qemu+ssh://u@host:2022/system", Transport.SSH, "host", 2022),
        ("qemu+SSH://host/system", Transport.SSH, "host", None),
        ("qemu+ext:///system?command=/bin/proxy", Transport.EXT, None, None),
        ("qemu+libssh://host/system", Transport.LIBSSH, "host", None),
    ],
)
def test_transport_host_port(uri: str, transport: Transport, host: str | None,
                             port: int | None) -> None:
    parsed = parse_uri(uri, **ROOT)  # type: ignore[arg-type]
    assert (parsed.transport, parsed.host, parsed.port) == (transport, host, port)
    assert parsed.hostname == (host or "localhost")


def test_user_and_options() -> None:
    parsed = parse_uri(
        "qemu+ssh://alice@h/system?keyfile=/k&no_tty=1&no_verify=1&command=/my/ssh&foo=1",
        **ROOT,  # type: ignore[arg-type]
    )
    assert parsed.user == "alice"
    assert parsed.options == {"keyfile": "/k", "command": "/my/ssh"}
    assert (parsed.verify, parsed.tty) == (False, False)
    assert parsed.params == (
        ("keyfile", "/k"), ("no_tty", "1"), ("no_verify", "1"), ("command", "/my/ssh"),
        ("foo", "1"),
    )
    assert parse_uri("qemu+tls://h/system?no_verify=0", **ROOT).verify is True  # type: ignore[arg-type]


def test_last_value_wins() -> None:
    parsed = parse_uri("test+unix:///default?socket=/a&socket=/b", **ROOT)  # type: ignore[arg-type]
    assert parsed.socket == "/b"


@pytest.mark.parametrize(
    ("uri", "readonly", "who", "socket"),
    [
        ("qemu:///system", False, ROOT, "/var/run/libvirt/libvirt-sock"),
        ("qemu:///system", True, ROOT, "/var/run/libvirt/libvirt-sock-ro"),
        ("qemu:///session", False, USER, "/run/user/1000/libvirt/libvirt-sock"),
        ("qemu:///session", True, USER, "/run/user/1000/libvirt/libvirt-sock"),
        ("qemu:///session", False, ROOT, "/var/run/libvirt/libvirt-sock"),  # root: system
        ("qemu:///system", False, USER, "/var/run/libvirt/libvirt-sock"),
        ("test+unix:///default", False, USER, "/run/user/1000/libvirt/libvirt-sock"),
        ("test:///default", False, USER, "/var/run/libvirt/libvirt-sock"),
        ("qemu:///system?socket=/my/sock", True, ROOT, "/my/sock"),
        ("qemu:///system?mode=direct", False, ROOT, "/var/run/libvirt/virtqemud-sock"),
        ("qemu:///system?mode=direct", True, ROOT, "/var/run/libvirt/virtqemud-sock-ro"),
        ("qemu:///session?mode=direct", False, USER, "/run/user/1000/libvirt/virtqemud-sock"),
        ("qemu+ssh://h/system", False, ROOT, "/var/run/libvirt/libvirt-sock"),
        ("qemu+ssh://h/system", True, ROOT, "/var/run/libvirt/libvirt-sock-ro"),
        ("qemu+tcp://h/system", False, ROOT, None),
        ("qemu+tls://h/system", False, ROOT, None),
    ],
)
def test_default_sockets(uri: str, readonly: bool, who: dict[str, object],
                         socket: str | None) -> None:
    assert parse_uri(uri, readonly=readonly, **who).socket == socket  # type: ignore[arg-type]


def test_modular_daemon_socket_is_preferred_when_present() -> None:
    present = {"/var/run/libvirt/virtqemud-sock", "/var/run/libvirt/libvirt-sock"}
    parsed = parse_uri("qemu:///system", euid=0, environ={}, exists=present.__contains__)
    assert parsed.socket == "/var/run/libvirt/virtqemud-sock"
    legacy = parse_uri("qemu:///system?mode=legacy", euid=0, environ={},
                       exists=present.__contains__)
    assert legacy.socket == "/var/run/libvirt/libvirt-sock"
    over_ssh = parse_uri("qemu+ssh://h/system", euid=0, environ={}, exists=present.__contains__)
    assert over_ssh.socket == "/var/run/libvirt/libvirt-sock"


def test_session_socket_without_xdg_runtime_dir() -> None:
    parsed = parse_uri("qemu:///session", euid=1000, environ={"HOME": "/home/a"},
                       exists=lambda p: False)
    assert parsed.socket == "/home/a/.cache/libvirt/libvirt-sock"


@pytest.mark.parametrize(
    ("uri", "proxy"),
    [
        ("qemu+ssh://h/system", Proxy.AUTO),
        ("qemu+ssh://h/system?socket=/s", Proxy.NETCAT),
        ("qemu+ssh://h/system?netcat=/bin/nc", Proxy.NETCAT),
        ("qemu+ssh://h/system?proxy=native", Proxy.NATIVE),
        ("qemu+ssh://h/system?proxy=netcat", Proxy.NETCAT),
    ],
)
def test_ssh_proxy(uri: str, proxy: Proxy) -> None:
    assert parse_uri(uri, **ROOT).proxy is proxy  # type: ignore[arg-type]


def test_ssh_session_of_a_user_uses_virt_ssh_helper() -> None:
    assert parse_uri("qemu+ssh://h/session", **USER).proxy is Proxy.NATIVE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("qemu+bogus:///system", "transport in URL not recognised"),
        ("qemu+unix://host/system", "using unix socket and remote server 'host'"),
        ("qemu://system/", "maybe you want qemu:///system"),
        ("qemu://session", "maybe you want qemu:///session"),
        ("qemu+tls://h/system?no_verify=yes", "Failed to parse value of URI component no_verify"),
        ("qemu:///system?mode=odd", "Unknown remote mode 'odd'"),
        ("qemu+ssh://h/system?mode=direct", "Cannot use direct socket mode for ssh"),
        ("qemu+ssh://h/system?proxy=native&netcat=nc", "netcat path not valid"),
        ("qemu+ssh://h/system?proxy=odd", "proxy type 'odd'"),
        ("qemu+ext:///system", "command is required"),
        ("no scheme", "Unable to parse URI"),
        ("/just/a/path", "Unable to parse URI"),
    ],
)
def test_refused(uri: str, message: str) -> None:
    with pytest.raises(URIError, match=message.replace("(", r"\(")):
        parse_uri(uri, **ROOT)  # type: ignore[arg-type]


def test_uri_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_uri("::", **ROOT)  # type: ignore[arg-type]


def test_split_query() -> None:
    assert split_query("a=1&b&=c&&d=%41%zz") == [("a", "1"), ("b", ""), ("d", "A%zz")]
    assert split_query("") == []
