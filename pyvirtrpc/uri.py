"""libvirt connection URIs, read the way libvirt's remote driver reads them.

``driver[+transport]://[user@][host][:port]/path[?query][#fragment]``

:func:`parse_uri` gives everything a client needs to connect: the transport, where to
connect (a unix socket path, a host and port, a command to run), the transport options
taken from the query, and the ``name`` to send in CONNECT_OPEN. That name is built as
libvirt builds it: the driver alone as the scheme, no user, host or port, the path and
fragment escaped as libxml2 escapes them, and the query without the parameters that only
the client uses (``socket``, ``name``, ``command``, ``pkipath``, ``no_verify`` and the
rest, matched case-insensitively). A ``remote`` scheme, or no URI at all, sends the empty
name so that the server picks its default.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyvirtrpc.errors import Error

TCP_PORT = 16509
TLS_PORT = 16514
SYSTEM_SOCKET_DIR = "/var/run/libvirt"  # libvirt's LOCALSTATEDIR/run/libvirt (= /run/libvirt)


class URIError(Error, ValueError):
    """A connection URI libvirt would refuse."""


class Transport(enum.StrEnum):
    UNIX = "unix"
    TCP = "tcp"
    TLS = "tls"
    SSH = "ssh"
    EXT = "ext"  # any command whose stdin/stdout reach the daemon (?command=)
    LIBSSH = "libssh"  # libvirt's in-process ssh clients; we accept the names, not the
    LIBSSH2 = "libssh2"  # transports (transport.py says so clearly)


class Proxy(enum.StrEnum):
    """What runs on the far side of an ssh connection (libvirt's ``?proxy=``)."""

    AUTO = "auto"  # virt-ssh-helper if the remote host has it, else nc
    NETCAT = "netcat"
    NATIVE = "native"  # virt-ssh-helper only


# Query parameters the client consumes: never passed to the server in the name.
_STRING_PARAMS = {
    "name": "name",
    "command": "command",
    "socket": "socket",
    "auth": "auth",
    "sshauth": "sshauth",
    "netcat": "netcat",
    "keyfile": "keyfile",
    "pkipath": "pkipath",
    "known_hosts": "known_hosts",
    "known_hosts_verify": "known_hosts_verify",
    "tls_priority": "tls_priority",
    "mode": "mode",
    "proxy": "proxy",
}
_NEGATED_PARAMS = {"no_sanity": "sanity", "no_verify": "verify", "no_tty": "tty"}
_DROPPED_PARAMS = {"authfile"}

_URI_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):"
    r"(?://(?P<authority>[^/?#]*))?"
    r"(?P<path>[^?#]*)"
    r"(?:\?(?P<query>[^#]*))?"
    r"(?:#(?P<fragment>.*))?$",
    re.DOTALL,
)
_AUTHORITY_RE = re.compile(
    r"^(?:(?P<user>[^@]*)@)?(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>[0-9]*))?$"
)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
_PATH_SAFE = _UNRESERVED | frozenset(b"/;@&=+$,")  # what libxml2 leaves unescaped in a path
_FRAGMENT_SAFE = _UNRESERVED | frozenset(b";/?:@&=+$,[]")
_QUERY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unescape(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    return _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode(
        "utf-8", "surrogateescape"
    )


def _escape(text: str, safe: frozenset[int]) -> str:
    return "".join(
        chr(b) if b in safe else f"%{b:02X}" for b in text.encode("utf-8", "surrogateescape")
    )


def split_query(query: str) -> list[tuple[str, str]]:
    """Query parameters as libvirt splits them (``&``, or ``;`` when no ``&`` follows).

    ``name`` alone means an empty value; ``=value`` is ignored.
    """
    params: list[tuple[str, str]] = []
    rest = query
    while rest:
        end = rest.find("&")
        if end < 0:
            end = rest.find(";")
        if end < 0:
            end = len(rest)
        part, rest = rest[:end], rest[end + 1 :]
        if not part or part.startswith("="):
            continue
        name, _, value = part.partition("=")
        params.append((_unescape(name), _unescape(value)))
    return params


def user_runtime_dir(environ: Mapping[str, str]) -> str:
    """libvirt's per-user runtime folder: ``$XDG_RUNTIME_DIR/libvirt`` (GLib's fallbacks)."""
    base = environ.get("XDG_RUNTIME_DIR") or environ.get("XDG_CACHE_HOME")
    if not base:
        base = os.path.join(environ.get("HOME") or str(Path.home()), ".cache")
    return os.path.join(base, "libvirt")


@dataclass(frozen=True)
class ParsedURI:
    """A connection URI and what follows from it; see :func:`parse_uri`."""

    uri: str | None  # as given (None: the server's default)
    driver: str | None  # "qemu" of "qemu+ssh"
    transport: Transport
    user: str | None
    host: str | None  # the server, IPv6 brackets stripped
    port: int | None  # the port to connect to (tcp/tls defaults filled in; ssh: as given)
    path: str
    fragment: str | None
    params: tuple[tuple[str, str], ...]  # every query parameter, in order
    name: str  # what CONNECT_OPEN sends
    readonly: bool
    socket: str | None = None  # unix socket (unix transport; far side of ssh)
    options: dict[str, str] = field(default_factory=dict)  # the client-only string params
    verify: bool = True  # not ?no_verify=1
    tty: bool = True  # not ?no_tty=1
    proxy: Proxy = Proxy.AUTO

    @property
    def hostname(self) -> str:
        """The server's name as libvirt's client uses it (``localhost`` when absent)."""
        return self.host or "localhost"


def parse_uri(
    uri: str | None,
    *,
    readonly: bool = False,
    euid: int | None = None,
    environ: Mapping[str, str] | None = None,
    exists: Callable[[str], bool] = os.path.exists,
) -> ParsedURI:
    """Parse ``uri`` as libvirt's remote driver does (``None``: let the server choose).

    ``euid``, ``environ`` and ``exists`` default to this process's and decide the default
    unix socket: the system one (``/var/run/libvirt/libvirt-sock``, or ``-sock-ro`` when
    ``readonly``), or, for a ``/session`` URI (or a ``test+`` scheme) of a non-root user,
    ``$XDG_RUNTIME_DIR/libvirt/libvirt-sock``. A modular daemon's socket
    (``virtqemud-sock``...) is preferred when it exists, as libvirt does.
    """
    euid = os.geteuid() if euid is None else euid
    environ = os.environ if environ is None else environ
    if uri is None or uri == "":
        return _probe(readonly, euid, environ)
    match = _URI_RE.match(uri)
    if match is None or any(c in uri for c in " \t\r\n<>\"{}|\\^`"):
        raise URIError(f"Unable to parse URI {uri}")
    scheme = match["scheme"]
    user = host = None
    port = 0
    authority = match["authority"]
    if authority is not None:
        parts = _AUTHORITY_RE.match(authority)
        if parts is None:
            raise URIError(f"Unable to parse URI {uri}")
        user = _unescape(parts["user"]) if parts["user"] is not None else None
        host = _unescape(parts["host"]).removeprefix("[").removesuffix("]") or None
        port = int(parts["port"]) if parts["port"] and host else 0
    path = _unescape(match["path"])
    fragment = _unescape(match["fragment"]) if match["fragment"] is not None else None
    params = split_query(match["query"] or "")

    if scheme in ("qemu", "vbox", "vz") and host in ("session", "system"):
        raise URIError(f"invalid URI {uri} (maybe you want {scheme}:///{host})")

    driver, plus, transport_name = scheme.partition("+")
    if plus:
        try:
            transport = Transport(transport_name.lower())
        except ValueError:
            raise URIError(
                "remote_open: transport in URL not recognised "
                "(should be tls|unix|ssh|ext|tcp|libssh2|libssh)"
            ) from None
        if transport is Transport.UNIX and host:
            raise URIError(f"using unix socket and remote server '{host}' is not supported.")
    else:
        transport = Transport.TLS if host else Transport.UNIX

    options: dict[str, str] = {}
    flags: dict[str, bool] = {}
    kept: list[tuple[str, str]] = []
    for pname, value in params:
        key = pname.lower()
        if key in _STRING_PARAMS:
            options[_STRING_PARAMS[key]] = value
        elif key in _NEGATED_PARAMS:
            try:
                flags[_NEGATED_PARAMS[key]] = int(value, 10) == 0
            except ValueError:
                raise URIError(f"Failed to parse value of URI component {pname}") from None
        elif key not in _DROPPED_PARAMS:
            kept.append((pname, value))

    name = options.get("name")
    if name is None:
        if scheme == "remote" or scheme.startswith("remote+"):
            name = ""
        else:
            name = _format_name(driver, path, kept, fragment)

    if port == 0:
        port = {Transport.TLS: TLS_PORT, Transport.TCP: TCP_PORT}.get(transport, 0)

    proxy = _proxy(options)
    user_daemon = (path == "/session" or scheme.startswith("test+")) and euid > 0
    socket = options.get("socket")
    if socket is None and transport in (Transport.UNIX, Transport.SSH, Transport.LIBSSH,
                                        Transport.LIBSSH2):
        mode = _mode(options, transport)
        socket = _default_socket(driver, mode, transport, user_daemon, readonly, environ, exists)
    if "proxy" not in options:
        if "socket" in options or "netcat" in options:
            proxy = Proxy.NETCAT
        elif user_daemon:
            proxy = Proxy.NATIVE
    if proxy is Proxy.NATIVE and "netcat" in options:
        raise URIError("netcat path not valid with native proxy mode")
    if transport is Transport.EXT and "command" not in options:
        raise URIError("remote_open: for 'ext' transport, command is required")

    return ParsedURI(
        uri=uri,
        driver=driver,
        transport=transport,
        user=user,
        host=host,
        port=port or None,
        path=path,
        fragment=fragment,
        params=tuple(params),
        name=name,
        readonly=readonly,
        socket=socket,
        options=options,
        verify=flags.get("verify", True),
        tty=flags.get("tty", True),
        proxy=proxy,
    )


def _probe(readonly: bool, euid: int, environ: Mapping[str, str]) -> ParsedURI:
    """No URI: the default unix socket (the user's daemon when not root), empty name."""
    if euid > 0:
        socket = os.path.join(user_runtime_dir(environ), "libvirt-sock")
    else:
        socket = f"{SYSTEM_SOCKET_DIR}/libvirt-sock{'-ro' if readonly else ''}"
    return ParsedURI(
        uri=None, driver=None, transport=Transport.UNIX, user=None, host=None, port=None,
        path="", fragment=None, params=(), name="", readonly=readonly, socket=socket,
    )


def _format_name(
    driver: str, path: str, params: list[tuple[str, str]], fragment: str | None
) -> str:
    # libvirt formats {scheme: driver, path, query, fragment} with libxml2: no server and
    # no port gives "driver://" then the path.
    name = f"{driver}://{_escape(path, _PATH_SAFE)}"
    if params:
        name += "?" + "&".join(f"{k}={_escape(v, _QUERY_SAFE)}" for k, v in params)
    if fragment is not None:
        name += "#" + _escape(fragment, _FRAGMENT_SAFE)
    return name


def _proxy(options: Mapping[str, str]) -> Proxy:
    value = options.get("proxy")
    if value is None:
        return Proxy.AUTO
    try:
        return Proxy(value)
    except ValueError:
        raise URIError(f"Unnkown proxy type '{value}'") from None  # libvirt's spelling


def _mode(options: Mapping[str, str], transport: Transport) -> str:
    mode = options.get("mode", "auto")
    if mode not in ("auto", "legacy", "direct"):
        raise URIError(f"Unknown remote mode '{mode}'")
    if mode == "direct" and transport is not Transport.UNIX:
        raise URIError(f"Cannot use direct socket mode for {transport} transport")
    return mode


def _default_socket(
    driver: str,
    mode: str,
    transport: Transport,
    user_daemon: bool,
    readonly: bool,
    environ: Mapping[str, str],
    exists: Callable[[str], bool],
) -> str:
    def path(prefix: str) -> str:
        if user_daemon:
            return os.path.join(user_runtime_dir(environ), f"{prefix}-sock")
        return f"{SYSTEM_SOCKET_DIR}/{prefix}-{'sock-ro' if readonly else 'sock'}"

    direct, legacy = path(f"virt{driver}d"), path("libvirt")
    if mode == "auto":
        # A local modular daemon's socket wins; over ssh nothing can be probed from here
        # (virt-ssh-helper probes on the far side), so the legacy path is named.
        mode = "direct" if transport is Transport.UNIX and exists(direct) else "legacy"
    return direct if mode == "direct" else legacy
