"""The warm server of the command line: every `flyte-images` command after the first runs in a
process that has already imported the package.

A command is mostly start-up: Python plus the modules a build needs take ~0.13 s, the work of an
edit-one-file build or a warm `id` a fraction of that. So the first command (run as usual, in
its own process) also starts a server in the background; it imports those modules once and
waits on a Unix socket. Later commands connect, hand over their stdin/stdout/stderr (the file
descriptors themselves, so output, colours and terminal checks are exactly those of the
command), their arguments, working folder, umask and environment, and the server forks a
worker that runs the command as this process would. The exit status comes back over the socket;
Ctrl-C and SIGTERM sent to the command are passed on to the worker; a command whose process dies
takes its worker with it (SIGINT: it cleans up as on Ctrl-C).

Only the same user's commands are served (a private 0700 folder, and the peer's uid checked).
A server serves only the Python, `sys.path` and package files it was started with: any change to
them (an upgrade, an edited checkout, a `pip install`) gives another socket, and so another
server. A server ends after FLYTE_IMAGES_SERVER_IDLE seconds (default 900) without a command.

FLYTE_IMAGES_SERVER=0 runs every command in its own process and starts no server; on CI (the
CI variable set) that is the default, FLYTE_IMAGES_SERVER=1 turns it on there. Anything that
stops a command from reaching a worker (no server yet, a stale socket, an unusable folder) runs
it in its own process instead: the server only ever makes a command faster.

This module runs before anything else of the command, so it imports only what it must.
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False  # not typing's: the client imports as little as it can
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

ENV = "FLYTE_IMAGES_SERVER"
IDLE_ENV = "FLYTE_IMAGES_SERVER_IDLE"
DEFAULT_IDLE = 900.0
_FALSE = ("0", "off", "false", "no")
_TRUE = ("1", "on", "true", "yes")
_FDS = (0, 1, 2)
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


def enabled() -> bool:
    value = os.environ.get(ENV, "").strip().lower()
    if value in _FALSE or not hasattr(os, "fork"):
        return False
    return value in _TRUE or not os.environ.get("CI")


def folder() -> str | None:
    """The private folder of this user's servers, made on first use; None when it is not
    private (owned by someone else, or open to others) and so must not be used."""
    name = f"flyte-images-{os.getuid()}"
    # The first place whose socket paths fit in a socket address (about 100 bytes).
    bases = [os.environ.get("XDG_RUNTIME_DIR"), os.environ.get("TMPDIR"), "/tmp"]
    base = next(b for b in bases if b and len(os.path.join(b, name).encode()) + 26 <= _MAX_SOCKET_PATH)
    path = os.path.join(base, name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not (info.st_mode & 0o170000 == 0o040000 and info.st_uid == os.getuid() and info.st_mode & 0o077 == 0):
        return None
    return path


def fingerprint() -> str:
    """What a server must share with a command to serve it: the interpreter, its module search
    path (with the times each folder of it last changed: an install or uninstall changes them)
    and every file of this package (path, size, modification time)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    facts = [sys.executable, sys.version, repr(sys.path), repr(sys.flags)]
    for entry in sys.path:
        try:
            facts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            facts.append(f"{entry}:-")
    folders = [here]
    while folders:
        with os.scandir(folders.pop()) as found:
            for item in found:
                if item.is_dir(follow_symlinks=False):
                    if item.name != "__pycache__":
                        folders.append(item.path)
                elif item.name.endswith((".py", ".typed", ".txt", ".toml", ".json")):
                    info = item.stat()
                    facts.append(f"{item.path}:{info.st_size}:{info.st_mtime_ns}")
    data = "\0".join(sorted(facts)).encode("utf-8", "surrogateescape")
    # Python's hash of an int is the same in every process and version (the int modulo the
    # prime 2**61 - 1): a checksum without importing zlib, which every command would pay for.
    return f"{hash(int.from_bytes(data, 'little')) & 0xFFFFFFFFFFFFFFFF:016x}{len(data) & 0xFFFF:04x}"


def socket_path(private: str, print_: str) -> str | None:
    path = os.path.join(private, f"{print_}.sock")
    return path if len(path.encode()) <= _MAX_SOCKET_PATH else None


def run(argv: Sequence[str]) -> int | None:
    """The command's exit status as run by a warm worker, or None when it must run in this
    process (and then, when there is no server yet, one is started for the next command)."""
    if not enabled():
        return None
    private = folder()
    if private is None:
        return None
    path = socket_path(private, fingerprint())
    if path is None:
        return None
    # The C modules, not `socket` and `signal`: those import enum and selectors, ~4 ms more
    # for every command.
    import _socket

    if not hasattr(_socket, "SCM_RIGHTS"):
        return None
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        _start_server(path)
        return None
    try:
        return _talk(conn, argv)
    finally:
        conn.close()


def exit_now(code: int) -> None:
    """End this process with `code` at once (what it wrote is flushed first)."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib would cost every command ~3 ms to import
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code & 0xFF)  # what sys.exit(code) gives


def _talk(conn: Any, argv: Sequence[str]) -> int | None:
    import _signal  # type: ignore[import-not-found]
    import _socket

    try:
        request = _request(argv)
    except OSError:
        return None  # no working folder (deleted under us): the command says so itself
    fds = [fd for fd in _FDS if _is_open(fd)]
    # 12 bytes: how many descriptors, the request's length, which of 0/1/2 they are (255: none).
    header = bytes([len(fds)]) + len(request).to_bytes(8, "big") + bytes(fds).ljust(3, b"\xff")
    rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    lines = _Lines(conn)
    try:
        conn.sendmsg([header], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        conn.sendall(request)
        first = lines.next()
    except OSError:
        return None
    if not first.startswith(b"pid "):
        return None  # the server could not start a worker: nothing has run yet
    worker = int(first[4:])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(worker, signum)
        except OSError:
            return

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
        if hasattr(_signal, name):
            _signal.signal(getattr(_signal, name), forward)
    while True:
        try:
            line = lines.next()
        except OSError:
            line = b""
        if line.startswith(b"exit "):
            return int(line[5:])
        if not line:
            sys.stderr.write("flyte-images: the command's worker ended without an exit status (killed?)\n")
            return 1


class _Lines:
    """Lines from a socket (the server's "pid N" and "exit N")."""

    def __init__(self, conn: Any) -> None:
        self._conn, self._rest = conn, b""

    def next(self) -> bytes:
        while b"\n" not in self._rest:
            try:
                chunk = self._conn.recv(256)
            except InterruptedError:
                continue
            if not chunk:
                line, self._rest = self._rest, b""
                return line
            self._rest += chunk
        line, _, self._rest = self._rest.partition(b"\n")
        return line + b"\n"


def _request(argv: Sequence[str]) -> bytes:
    mask = os.umask(0o022)
    os.umask(mask)
    streams = {}
    for name in ("stdin", "stdout", "stderr"):
        stream = getattr(sys, name)
        streams[name] = (getattr(stream, "encoding", None), getattr(stream, "errors", None))
    return marshal.dumps(
        {
            "argv": list(argv),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": mask,
            "streams": streams,
        }
    )


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _start_server(path: str) -> None:
    """Start a server for `path` in the background, detached from this command's terminal; it
    exits at once when another one already serves the path."""
    import subprocess

    # The server searches modules exactly where this command does (not where `-m` would add
    # its working folder), so that it loads the same package and computes the same fingerprint.
    start = (
        "import marshal, sys; sys.path[:] = marshal.loads(bytes.fromhex(sys.argv[1])); "
        "from flyte_images._warm.server import main; sys.exit(main(sys.argv[2:]))"
    )
    command = [sys.executable, "-c", start, marshal.dumps(list(sys.path)).hex(), path]
    try:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        return
