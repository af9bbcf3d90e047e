"""The managed local Neo4j: fetch its jars, start it on loopback, stop it cleanly.

kgrec runs a real Neo4j 5.26 LTS Community server through a one-file Java launcher
(``java/KgrecNeo4j.java``) built on ``DatabaseManagementServiceBuilder`` with the
Bolt connector on. Everything lives under the kgrec home (``$KGREC_HOME``, default
``~/.local/share/kgrec``)::

    neo4j/<version>/lib/        jars resolved by Maven on first use
    neo4j/<version>/classes/    the compiled launcher
    servers/<port>/             data, logs, ``server.json`` and ``password`` of the server on that port

A server is a detached background process (its own session), so it outlives the
``kgrec db start`` that started it; ``server.json`` records its pid for ``stop``.

The server is private to the user who runs kgrec: it listens on loopback only, asks
for a password (user ``neo4j``, a random one made at first start and kept in
``servers/<port>/password``), refuses ``LOAD CSV`` from local files, and everything
under the kgrec home is readable by its owner only (folders 0700, files 0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from kgrec.errors import GraphStoreUnavailable

NEO4J_VERSION = "5.26.30"
LAUNCHER_CLASS = "KgrecNeo4j"
READY_LINE = "kgrec-neo4j ready"  # the launcher prints it once Bolt is open and its procedure is registered
LOCAL_HOST = "127.0.0.1"
AUTH_USER = "neo4j"  # the managed server's only user
PASSWORD_FILE = "password"
STATE_FILE = "server.json"
PRIVATE_UMASK = 0o077  # for what kgrec and its server write: folders 0700, files 0600


def kgrec_home() -> Path:
    """``$KGREC_HOME`` or ``~/.local/share/kgrec``."""
    return Path(os.environ.get("KGREC_HOME") or Path.home() / ".local" / "share" / "kgrec")


@dataclass
class ServerState:
    """What ``server.json`` records about a running local server."""

    pid: int
    host: str
    port: int
    server_dir: str
    neo4j_version: str
    started_at: float

    @property
    def uri(self) -> str:
        return f"bolt://{self.host}:{self.port}"

    @property
    def password_file(self) -> Path:
        """Where the server's password is kept (mode 0600); ``kgrec db status`` shows it."""
        return Path(self.server_dir) / PASSWORD_FILE

    @property
    def auth(self) -> tuple[str, str]:
        """``(user, password)`` for the driver."""
        return AUTH_USER, self.password_file.read_text(encoding="utf-8").strip()


def runtime_dir(home: Path | None = None) -> Path:
    return (home or kgrec_home()) / "neo4j" / NEO4J_VERSION


def server_dir(port: int, home: Path | None = None) -> Path:
    return (home or kgrec_home()) / "servers" / str(port)


def password_path(port: int, home: Path | None = None) -> Path:
    """The password file of the managed server on ``port``."""
    return server_dir(port, home) / PASSWORD_FILE


def read_password(port: int, home: Path | None = None) -> str | None:
    """The managed server's password, or None when it was never started (no file yet)."""
    return read_password_file(password_path(port, home))


def read_password_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def ensure_runtime(home: Path | None = None, echo=print) -> Path:
    """Fetch the Neo4j jars with Maven and compile the launcher, once; return the runtime dir."""
    home = home or kgrec_home()
    runtime = runtime_dir(home)
    lib, classes = runtime / "lib", launcher_classes(runtime)
    make_private_dir(runtime, home)
    if not (lib / f"neo4j-{NEO4J_VERSION}.jar").is_file():
        _require_tool("mvn", "Maven")
        echo(f"Fetching Neo4j {NEO4J_VERSION} jars from Maven Central into {lib} (first use only)…")
        build = make_private_dir(runtime / "build", home)
        _write_private(build / "pom.xml", _java_source("pom.xml").read_text(encoding="utf-8"))
        partial = runtime / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _run_checked(
            ["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={partial}"],
            cwd=build,
            what="Maven could not fetch the Neo4j jars",
        )
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)  # only a complete download becomes lib/
    if not (classes / f"{LAUNCHER_CLASS}.class").is_file():
        _require_tool("javac", "a Java 17+ JDK")
        make_private_dir(classes, home)
        _run_checked(
            ["javac", "-cp", str(lib / "*"), "-d", str(classes), str(_java_source(f"{LAUNCHER_CLASS}.java"))],
            cwd=runtime,
            what="javac could not compile the Neo4j launcher",
        )
    return runtime


def launcher_classes(runtime: Path) -> Path:
    """Where the compiled launcher goes: one folder per version of its source, so an
    upgraded kgrec compiles its own launcher instead of reusing an older one."""
    digest = hashlib.sha256(_java_source(f"{LAUNCHER_CLASS}.java").read_bytes()).hexdigest()[:12]
    return runtime / "classes" / digest


def read_state(port: int, home: Path | None = None) -> ServerState | None:
    """The state of the local server on ``port``, or None when none is running there.

    A ``server.json`` whose pid is gone, or is now some other program (pids are reused
    after a crash or a reboot), is stale: it is removed and None is returned.
    """
    state_file = server_dir(port, home) / STATE_FILE
    state = _load_state(state_file)
    if state is None:
        return None
    if not _pid_alive(state.pid) or _not_our_launcher(state.pid, port, home) is not None:
        state_file.unlink(missing_ok=True)
        return None
    return state


def _load_state(state_file: Path) -> ServerState | None:
    try:
        fields = json.loads(state_file.read_text(encoding="utf-8"))
        return ServerState(**{name: fields[name] for name in ServerState.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Half-written or from another version: it names no process kgrec can trust.
        state_file.unlink(missing_ok=True)
        return None


def _write_state(state: ServerState) -> None:
    state_file = Path(state.server_dir) / STATE_FILE
    partial = state_file.with_suffix(".json.partial")
    _write_private(partial, json.dumps(asdict(state), indent=2))
    os.replace(partial, state_file)  # a reader sees the old file or the new one, never half of one


def _not_our_launcher(pid: int, port: int, home: Path | None = None) -> str | None:
    """None when ``pid`` is kgrec's launcher serving ``port`` from this home's server
    folder; otherwise the command line that pid runs (what to show the user)."""
    argv = _command_line(pid)
    if argv is None:
        return "(its command line cannot be read)"
    expected = (server_dir(port, home) / "dbms").resolve()
    for i, arg in enumerate(argv[:-3]):
        if arg == LAUNCHER_CLASS and argv[i + 2 : i + 4] == [LOCAL_HOST, str(port)]:
            if Path(argv[i + 1]).resolve() == expected:
                return None
    return " ".join(argv)[:200] or "(an empty command line)"


def _command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []  # the process is gone
        raw = None
    except OSError:
        return None
    if raw is not None:
        return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    # No /proc (macOS): ps prints the arguments joined by spaces.
    done = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else None


# The JVM options Neo4j's own launcher uses. Without the --add-opens the page cache falls
# back to a slow path ("Reflection access to java.nio.DirectByteBuffer is not available").
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
)


def start_server(
    port: int = 7687,
    heap_mb: int = 1024,
    pagecache_mb: int = 512,
    home: Path | None = None,
    timeout_s: float = 120.0,
    echo=print,
) -> ServerState:
    """Start the local server on ``127.0.0.1:port`` (or return the one already there)."""
    running = read_state(port, home)
    if running is not None:
        return running
    if _port_in_use(LOCAL_HOST, port):
        raise GraphStoreUnavailable(
            f"Port {port} on {LOCAL_HOST} is already in use by another program. "
            f"Stop it, or start kgrec's Neo4j on another port with `kgrec db start --set store.port={port + 1}` "
            f"and pass the same --set store.port={port + 1} to later commands (or set store.port in your config)."
        )
    _require_tool("java", "Java 17+")
    home = (home or kgrec_home()).absolute()
    runtime = ensure_runtime(home, echo=echo)
    sdir = make_private_dir(server_dir(port, home), home)
    password_file = _ensure_password(sdir / PASSWORD_FILE)
    log_path = sdir / "server.log"
    command = [
        "java",
        f"-Xms{min(heap_mb, 512)}m",
        f"-Xmx{heap_mb}m",
        *JVM_OPTIONS,
        "-cp",
        f"{runtime / 'lib' / '*'}{os.pathsep}{launcher_classes(runtime)}",
        LAUNCHER_CLASS,
        str(sdir / "dbms"),
        LOCAL_HOST,
        str(port),
        str(pagecache_mb),
        str(password_file),  # the path, not the password: command lines are public in /proc
    ]
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with _open_private(log_path, os.O_APPEND) as log:
        # umask: the store, its logs and auth.ini are created by the JVM, not by kgrec.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    state = ServerState(
        pid=process.pid,
        host=LOCAL_HOST,
        port=port,
        server_dir=str(sdir),
        neo4j_version=NEO4J_VERSION,
        started_at=time.time(),
    )
    # Recorded before the wait: if this `kgrec db start` is killed or interrupted while
    # Neo4j starts, the server lives on and `kgrec db stop` must still find it.
    _write_state(state)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (sdir / STATE_FILE).unlink(missing_ok=True)
            raise GraphStoreUnavailable(
                f"The local Neo4j exited during start (code {process.returncode}). "
                f"Last lines of {log_path}:\n{_tail(log_path)}"
            )
        if _port_in_use(LOCAL_HOST, port) and _printed_since(log_path, log_start, READY_LINE):
            return state
        time.sleep(0.25)
    _terminate(process.pid, grace_s=10)
    (sdir / STATE_FILE).unlink(missing_ok=True)
    raise GraphStoreUnavailable(
        f"The local Neo4j did not open {LOCAL_HOST}:{port} within {timeout_s:.0f} s. See {log_path}."
    )


def stop_server(port: int = 7687, home: Path | None = None, grace_s: float = 60.0) -> ServerState | None:
    """Stop the local server on ``port`` cleanly (SIGTERM, then wait). Returns what was stopped.

    Only kgrec's own launcher for this port and home is signalled: a ``server.json`` that
    names another process (its pid was reused) is removed as stale, and the process is
    left alone.
    """
    state_file = server_dir(port, home) / STATE_FILE
    state = _load_state(state_file)
    if state is None:
        return None
    if not _pid_alive(state.pid):
        state_file.unlink(missing_ok=True)  # a crashed or killed server leaves a stale file
        return None
    other = _not_our_launcher(state.pid, port, home)
    if other is not None:
        state_file.unlink(missing_ok=True)
        raise GraphStoreUnavailable(
            f"Did not stop pid {state.pid}: {state_file} names it as kgrec's Neo4j on port {port}, "
            f"but that pid now runs another program ({other}). The file was stale (the server it "
            f"recorded is gone and its pid was reused), so kgrec removed it and signalled nothing. "
            f"If a kgrec Neo4j still holds port {port}, find its pid with `ps -ef | grep {LAUNCHER_CLASS}` "
            f"and stop it with `kill <pid>`."
        )
    _terminate(state.pid, grace_s=grace_s)
    state_file.unlink(missing_ok=True)
    return state


def _terminate(pid: int, grace_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)  # the launcher's shutdown hook closes the store
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        # Reap it if it is our own finished child, so it does not linger as a zombie.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _printed_since(path: Path, offset: int, line: str) -> bool:
    with open(path, "rb") as log:
        log.seek(offset)
        return line.encode() in log.read()


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    """A free TCP port on loopback (for throwaway test servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCAL_HOST, 0))
        return s.getsockname()[1]


def make_private_dir(path: Path, home: Path) -> Path:
    """Create ``path`` and the folders from the kgrec ``home`` down to it, owner-only (0700).

    Folders an older kgrec made 0755 are tightened too; the home's own parents (such as
    ``~/.local/share``) are not kgrec's and keep their modes.
    """
    home.parent.mkdir(parents=True, exist_ok=True)
    relative = path.relative_to(home).parts
    for depth in range(len(relative) + 1):
        folder = home.joinpath(*relative[:depth])
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.stat().st_mode & 0o077:
            os.chmod(folder, 0o700)
    return path


def _open_private(path: Path, flags: int = os.O_TRUNC):
    """``path`` opened for binary writing, created 0600 (and made 0600 if it was wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def _write_private(path: Path, text: str) -> None:
    with _open_private(path) as f:
        f.write(text.encode("utf-8"))


def _ensure_password(path: Path) -> Path:
    """The server's password file, made at first start with a new random password."""
    if read_password_file(path) is None:
        _write_private(path, secrets.token_urlsafe(32) + "\n")
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


def _java_source(name: str) -> Path:
    return Path(str(resources.files("kgrec.store").joinpath("java", name)))


def _require_tool(tool: str, what: str) -> None:
    if shutil.which(tool) is None:
        raise GraphStoreUnavailable(
            f"`{tool}` was not found on PATH; the managed local Neo4j needs {what}. "
            "Install it, or use your own server by setting NEO4J_URI (with NEO4J_USER and NEO4J_PASSWORD)."
        )


def _run_checked(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, umask=PRIVATE_UMASK)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise GraphStoreUnavailable(f"{what} (exit {result.returncode}):\n" + "\n".join(output))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
