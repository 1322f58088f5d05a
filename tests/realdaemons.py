"""Real libvirt daemons for the tests, started the way /work/shared/REAL-LIBVIRT.md says.

Two kinds of daemon:

- ``LibvirtdTestDriver``: root libvirtd with only the built-in test driver (no driver modules
  are loaded: ``LIBVIRT_DRIVER_DIR`` points at an empty folder), its own config, sockets and
  log in a private temporary folder. Starts in about a second; the default domain ``test`` is
  running.
- ``LibvirtdQemuSession``: an unprivileged ("session" mode) libvirtd run as ``nobody``, with
  the qemu driver, for real block-threshold events from a real qemu (TCG, no /dev/kvm needed).

The classes work without pytest (``tools/capture-golden`` uses them); the fixtures at the end
wrap them. A missing libvirtd, virsh or qemu is a test *failure*, never a skip: a real peer
that is missing in CI must be noticed.

Every daemon is stopped by its own pid, never by name, and at the latest when the Python
process that started it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
QEMU_USER = "nobody"

INSTALL_HINT = (
    "install them with: apt-get install -y --no-install-recommends libvirt-daemon "
    "libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config qemu-system-x86 "
    "qemu-utils (tools/test does this)"
)


class DaemonError(RuntimeError):
    """A real daemon could not be started, or a tool it needs is missing."""


# --------------------------------------------------------------------------- helpers


def find_tool(name: str) -> str | None:
    """Find an executable on PATH, or in the sbin folders that a non-root PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(folder, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tools(*names: str) -> dict[str, str]:
    """Return the paths of the named tools; raise DaemonError naming every missing one."""
    paths = {name: find_tool(name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DaemonError(f"missing real-peer tools: {', '.join(missing)}; {INSTALL_HINT}")
    return {name: path for name, path in paths.items() if path is not None}


def tool(name: str) -> str:
    return require_tools(name)[name]


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


def can_connect(path: Path) -> bool:
    """True when something accepts connections on the unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_pid(
    pid: int, timeout: float = STOP_TIMEOUT, reap: Callable[[], object] | None = None
) -> None:
    """SIGTERM ``pid``, wait for it to go away, SIGKILL it if it does not."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def virsh_env() -> dict[str, str]:
    """Environment for virsh: untranslated messages, no default URI from the caller."""
    env = dict(os.environ)
    env.pop("LIBVIRT_DEFAULT_URI", None)
    env.update(LC_ALL="C", LANG="C")
    return env


def virsh(
    uri: str,
    *args: str,
    readonly: bool = False,
    check: bool = True,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``virsh -c URI [-r] ARGS...``; raise with its output when ``check`` and it fails."""
    cmd = [tool("virsh"), "-c", uri, *(["-r"] if readonly else []), *args]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=virsh_env(), check=False
    )
    if check and result.returncode != 0:
        raise DaemonError(
            f"{' '.join(cmd)} failed with {result.returncode}:\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def wait_until(
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    what: str,
    logs: list[Path],
    timeout: float = START_TIMEOUT,
) -> None:
    """Poll ``ready`` until true; fail early if ``alive`` turns false, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        problem = None
        if not alive():
            problem = "the daemon exited"
        elif time.monotonic() > deadline:
            problem = f"timed out after {timeout:.0f} s"
        if problem:
            shown = "\n".join(f"--- {log} (tail) ---\n{tail(log)}" for log in logs)
            raise DaemonError(f"{what}: {problem}\n{shown}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- test driver


class LibvirtdTestDriver:
    """Root libvirtd with the built-in test driver only (REAL-LIBVIRT.md, section 1).

    ``socket``/``ro_socket``: the read-write and read-only unix sockets; ``uri``/``ro_uri``:
    ``test+unix:///default?socket=...``. The test driver's state (domain ``test``, running)
    is shared by all connections and reset when the last connection closes.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, directory: Path | None = None, *, extra_config: str = "", listen: bool = False
    ) -> None:
        """``extra_config``: more libvirtd.conf lines; ``listen``: pass ``--listen`` (TCP/TLS)."""
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="pyvirtrpc-lvtest-"))
        self.extra_config = extra_config
        self.listen = listen
        self.drivers_dir = self.dir / "drivers"
        self.config_path = self.dir / "libvirtd.conf"
        self.log_path = self.dir / "libvirtd.log"
        self.stderr_path = self.dir / "libvirtd.stderr"
        self.pid_file = self.dir / "libvirtd.pid"
        self.socket = self.dir / "libvirt-sock"
        self.ro_socket = self.dir / "libvirt-sock-ro"
        self.admin_socket = self.dir / "libvirt-admin-sock"
        self.uri = f"test+unix:///default?socket={self.socket}"
        self.ro_uri = f"test+unix:///default?socket={self.ro_socket}"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._at_exit = False

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DaemonError("libvirtd (test driver) is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        self.drivers_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f'unix_sock_dir = "{self.dir}"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            'unix_sock_rw_perms = "0770"\n'
            f'log_outputs = "3:file:{self.log_path}"\n' + self.extra_config
        )

    def start(self) -> LibvirtdTestDriver:
        """Start libvirtd and wait until both sockets accept connections."""
        if self.running:
            return self
        libvirtd = tool("libvirtd")
        self._write_config()
        env = dict(os.environ, LIBVIRT_DRIVER_DIR=str(self.drivers_dir))
        env.pop("LIBVIRT_DEFAULT_URI", None)
        started = time.monotonic()
        with self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                [libvirtd, "-f", str(self.config_path), "--pid-file", str(self.pid_file),
                 *(["--listen"] if self.listen else [])],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=env,
            )
        proc = self._proc
        try:
            wait_until(
                lambda: can_connect(self.socket) and can_connect(self.ro_socket),
                lambda: proc.poll() is None,
                f"libvirtd (test driver) in {self.dir} did not open its sockets",
                [self.log_path, self.stderr_path],
            )
        except DaemonError:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        if not self._at_exit:  # a safety net: never outlive this process
            self._at_exit = atexit.register(self.close) is not None
        return self

    def kill(self) -> None:
        """SIGKILL the daemon (for tests that kill it mid-call); ``restart()`` brings it back."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()

    def stop(self) -> None:
        """Stop the daemon by its pid (SIGTERM, then SIGKILL)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            stop_pid(proc.pid, reap=proc.poll)
        proc.wait()

    def restart(self) -> LibvirtdTestDriver:
        """Start again on the same sockets (after ``kill()``, or stopping it if it runs)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the daemon and remove its folder (if this object made it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LibvirtdTestDriver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LibvirtdTestDriver dir={self.dir} running={self.running}>"


# --------------------------------------------------------------------------- qemu session

THIN_DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>{uuid}
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{top}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""

# The QOM path of the thin domain's disk for HMP ``qemu-io -d``: libvirt gives the first
# virtio disk the alias ``virtio-disk0``, which is the qdev id under /machine/peripheral.
THIN_DISK_QOM_PATH = "/machine/peripheral/virtio-disk0/virtio-backend"


class LibvirtdQemuSession:
    """libvirtd in session mode as ``nobody``, with qemu (REAL-LIBVIRT.md, section 2)."""

    __test__ = False

    def __init__(self, directory: Path | None = None) -> None:
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="pyvirtrpc-lvqemu-"))
        self.home = self.dir / "home"
        self.run_dir = self.dir / "run"
        self.img_dir = self.dir / "img"
        self.stderr_path = self.dir / "libvirtd.stderr"
        self.socket = self.run_dir / "libvirt" / "libvirt-sock"
        self.pid_file = self.run_dir / "libvirt" / "libvirtd.pid"
        self.uri = f"qemu+unix:///session?socket={self.socket}"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # runuser, libvirtd's parent
        self._at_exit = False
        user = pwd.getpwnam(QEMU_USER)
        self._uid, self._gid = user.pw_uid, user.pw_gid

    @property
    def pid(self) -> int | None:
        """libvirtd's own pid (from its pid file), not runuser's."""
        return read_pid_file(self.pid_file)

    @property
    def log_path(self) -> Path:
        """libvirtd's log in session mode (warnings and errors)."""
        return self.home / ".cache" / "libvirt" / "libvirtd.log"

    def _chown_tree(self, root: Path) -> None:
        os.chown(root, self._uid, self._gid)
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                os.chown(os.path.join(folder, name), self._uid, self._gid)

    def start(self) -> LibvirtdQemuSession:
        if self._proc is not None and self._proc.poll() is None:
            return self
        tools = require_tools(
            "libvirtd", "virsh", "runuser", "qemu-system-x86_64", "qemu-img", "qemu-io"
        )
        for folder in (self.home, self.run_dir, self.img_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self._chown_tree(self.dir)
        started = time.monotonic()
        with self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                [
                    tools["runuser"],
                    "-u",
                    QEMU_USER,
                    "--",
                    "env",
                    f"HOME={self.home}",
                    f"XDG_RUNTIME_DIR={self.run_dir}",
                    f"XDG_CONFIG_HOME={self.home / '.config'}",
                    f"XDG_CACHE_HOME={self.home / '.cache'}",
                    "LC_ALL=C",
                    tools["libvirtd"],
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        proc = self._proc
        try:
            wait_until(
                lambda: can_connect(self.socket),
                lambda: proc.poll() is None,
                f"session libvirtd (qemu) in {self.dir} did not open its socket",
                [self.stderr_path, self.log_path],
            )
        except DaemonError:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        if not self._at_exit:  # a safety net: never outlive this process
            self._at_exit = atexit.register(self.close) is not None
        return self

    def make_thin_domain(self, name: str, uuid: str | None = None) -> tuple[str, Path]:
        """Make a thin disk (qcow2 overlay on a base holding 16 MiB of data) for ``name``.

        Returns the domain XML of REAL-LIBVIRT.md and the overlay's path. The caller defines
        and starts the domain through whatever client it tests. Images live in
        ``img_dir/<name>/`` so that several domains do not share a disk. Without ``uuid``,
        libvirt picks a random one at define time.
        """
        folder = self.img_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        base, top = folder / "base.qcow2", folder / "top.qcow2"
        qemu_img, qemu_io = tool("qemu-img"), tool("qemu-io")
        for cmd in (
            [qemu_img, "create", "-q", "-f", "qcow2", str(base), "64M"],
            [qemu_io, "-c", "write -P 0xab 0 16M", str(base)],
            [qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
        ):
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise DaemonError(f"{' '.join(cmd)} failed: {result.stdout}{result.stderr}")
        self._chown_tree(folder)
        xml = THIN_DOMAIN_XML.format(
            name=name,
            uuid=f"\n  <uuid>{uuid}</uuid>" if uuid else "",
            emulator=tool("qemu-system-x86_64"),
            top=top,
        )
        return xml, top

    def hmp_write(
        self, name: str, offset: str, length: str, pattern: int = 0x5A, uri: str | None = None
    ) -> None:
        """Make qemu write to the thin domain's disk from the host side (HMP ``qemu-io``).

        Goes over libvirt's QEMU program (``virsh qemu-monitor-command --hmp``), to ``uri``
        (default: this daemon; a recorder's socket, say, to capture it). Offsets and
        lengths are qemu-io sizes such as ``"32M"``. Note that a block threshold compares the
        *host* offset in the overlay file, which grows by about ``length`` per new cluster
        range written, not the guest ``offset``.
        """
        command = f'qemu-io -d {THIN_DISK_QOM_PATH} "write -P {pattern:#x} {offset} {length}"'
        result = virsh(uri or self.uri, "qemu-monitor-command", name, "--hmp", command)
        if result.stdout.strip():  # HMP qemu-io prints only on failure
            raise DaemonError(f"{command!r} failed: {result.stdout.strip()}")

    def destroy_all_domains(self) -> None:
        """Destroy every running domain (``virsh list --name``, then ``destroy``)."""
        listing = virsh(self.uri, "list", "--name", check=False, timeout=30)
        for name in listing.stdout.split():
            virsh(self.uri, "destroy", name, check=False, timeout=30)

    def _helper_pids(self) -> list[int]:
        """qemu and virtlogd processes started for this daemon, from their pid files."""
        libvirt_run = self.run_dir / "libvirt"
        pid_files = [*libvirt_run.glob("qemu/run/*.pid"), libvirt_run / "virtlogd.pid"]
        pids = [read_pid_file(path) for path in pid_files]
        return [pid for pid in pids if pid is not None and pid_alive(pid)]

    def stop(self) -> None:
        """Stop libvirtd by its pid file, then any leftover qemu/virtlogd of this folder."""
        proc = self._proc
        if proc is None:
            return
        pid = self.pid
        if pid is not None and pid_alive(pid):
            stop_pid(pid, reap=proc.poll)
        if proc.poll() is None:  # runuser (still) waits: never started, or no pid file
            stop_pid(proc.pid, reap=proc.poll)
        proc.wait()
        for helper in self._helper_pids():
            stop_pid(helper)
        self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None and can_connect(self.socket):
            self.destroy_all_domains()
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LibvirtdQemuSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LibvirtdQemuSession dir={self.dir} pid={self.pid}>"


# --------------------------------------------------------------------------- fixtures


Daemon = TypeVar("Daemon", LibvirtdTestDriver, LibvirtdQemuSession)


def _started(daemon: Daemon) -> Daemon:
    try:
        return daemon.start()
    except DaemonError as exc:
        daemon.close()
        pytest.fail(f"real libvirt peer unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def libvirtd_test() -> Iterator[LibvirtdTestDriver]:
    """A test-driver libvirtd shared by the whole session.

    A test that ``kill()``s it must ``restart()`` it before returning; prefer
    ``libvirtd_test_factory`` for tests that disturb the daemon.
    """
    daemon = _started(LibvirtdTestDriver())
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def libvirtd_test_factory() -> Iterator[Callable[[], LibvirtdTestDriver]]:
    """Call it to get a private test-driver libvirtd; all are stopped when the test ends."""
    daemons: list[LibvirtdTestDriver] = []

    def make() -> LibvirtdTestDriver:
        daemon = LibvirtdTestDriver()
        daemons.append(daemon)
        return _started(daemon)

    try:
        yield make
    finally:
        for daemon in daemons:
            daemon.close()


@pytest.fixture(scope="session")
def libvirtd_qemu() -> Iterator[LibvirtdQemuSession]:
    """A session-mode libvirtd (as nobody) with qemu, shared by the whole session."""
    daemon = _started(LibvirtdQemuSession())
    try:
        yield daemon
    finally:
        daemon.close()
