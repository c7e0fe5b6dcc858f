"""The warm server (see `flyte_images._warm`, which starts it): `main([SOCKET])`.

The server process only imports and waits: it never runs a command itself and starts no
thread, so each worker it forks starts from freshly imported modules with nothing half-done in
them, and the user's own files (the module that defines the images, its folders) are read by
the worker, as by any new process.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

from . import DEFAULT_IDLE, IDLE_ENV, fingerprint, folder, socket_path

# What the commands use, imported once here so that no worker pays for it.
PRELOAD = (
    "flyte_images._cli",
    "flyte_images._cli._build",
    "flyte_images._cli._id",
    "flyte_images._cli._dockerfile",
    "flyte_images._cli._exists",
    "flyte_images._cli._explain",
    "flyte_images._deploy",
    "flyte_images._build",
    "flyte_images._plan",
    "flyte_images._stage",
    "flyte_images._skip",
    "flyte_images._progress",
    "flyte_images._explain",
    "flyte_images._layers.files",
    "flyte_images._layers.system",
    "flyte_images._registry.client",
    "flyte_images._registry.push",
    "flyte_images._append.build",
    "flyte_images._append.run",
    "flyte_images._append.basefs",
    "flyte_images._append.image",
    "flyte_images._append.tarball",
    "flyte_images.builders.base",
    "flyte_images.builders.docker",
    "flyte_images.builders.buildkit",
    "tarfile",
    "gzip",
    "argparse",
)
MAX_REQUEST = 64 * 1024 * 1024


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: main([SOCKET])", file=sys.stderr)
        return 2
    path = argv[0]
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # a module that cannot load here loads in the worker
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        from .. import _cli

        for command in (None, *_cli._COMMANDS):
            _cli.parser_for(command)
        _cli._allow_forks()  # as in a command's own process: a worker is as small
    # Everything imported so far lives as long as the server: kept out of the collector, so a
    # worker's collections neither walk it nor copy its memory pages (copy-on-write).
    gc.freeze()
    private = folder()
    if private is None or socket_path(private, fingerprint()) != path:
        return 0  # the files changed while this started: a command with the new ones starts another
    idle = _idle_seconds()
    with open(f"{path}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # another server has this socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a server that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(mask)
        listener.listen(64)
        listener.settimeout(1.0)
        try:
            _serve(listener, idle, lock.fileno())
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return 0


def _idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE)))
    except ValueError:
        return DEFAULT_IDLE


def _serve(listener: socket.socket, idle: float, lock: int) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Workers name the memo files they read or wrote on this pipe; the server reads them in
    # between commands and keeps them unpacked for the next workers (`_treememo.KEPT`).
    notes, tell = os.pipe()
    os.set_blocking(notes, False)
    os.set_blocking(tell, False)  # a worker never waits for the server to listen
    pending = b""
    workers: set[int] = set()
    last = time.monotonic()
    while not stopping:
        _reap(workers)
        if not workers and time.monotonic() - last > idle:
            return
        try:
            ready, _w, _x = select.select([listener.fileno(), notes], [], [], 1.0)
        except InterruptedError:
            continue
        if notes in ready:
            pending = _keep_memos(notes, pending)
        if listener.fileno() not in ready:
            continue
        try:
            conn, _ = listener.accept()
        except (TimeoutError, InterruptedError, BlockingIOError):
            continue
        last = time.monotonic()
        with conn:
            if not _same_user(conn):
                continue
            try:
                pid = os.fork()
            except OSError:
                continue  # the command sees the connection close before a pid: it runs itself
            if pid == 0:
                # A worker holds neither the socket nor the lock: a server that ends while a
                # long build still runs can be replaced at once.
                listener.close()
                os.close(lock)
                os.close(notes)
                _work(conn, tell)  # never returns
            workers.add(pid)


def _keep_memos(notes: int, pending: bytes) -> bytes:
    """Read the memo files named on the pipe (whole lines) into `_treememo.KEPT`."""
    from .._treememo import KEPT

    with contextlib.suppress(BlockingIOError, InterruptedError):
        while chunk := os.read(notes, 65536):
            pending += chunk
    *lines, pending = pending.split(b"\n")
    for line in dict.fromkeys(lines):
        with contextlib.suppress(Exception):
            KEPT.keep(os.fsdecode(line))
    if lines:
        gc.freeze()  # as the imports: kept out of the collector, shared with workers as they are
    return pending[-65536:]


def _reap(workers: set[int]) -> None:
    for pid in list(workers):
        with contextlib.suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
        workers.discard(pid)


def _same_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # the folder is private to this user; the peer check is Linux's extra
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return bool(uid == os.getuid())


def _work(conn: socket.socket, tell: int) -> None:
    """Run one command in this forked worker and exit with its status; `tell` is the pipe on
    which the memo files it reads or writes are named to the server."""
    code = 1
    finished: list[bool] = []
    started = False  # until the command has its worker's pid, a failure makes it run itself
    try:
        for name in ("SIGTERM", "SIGHUP", "SIGCHLD", "SIGQUIT"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request = _receive(conn)
        _tell_memos(tell)
        conn.sendall(f"pid {os.getpid()}\n".encode())
        started = True
        _watch(conn, finished)
        from .._cli import main

        try:
            code = main(request["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
    except BaseException:
        if started:
            import traceback

            with contextlib.suppress(Exception):
                traceback.print_exc()
        code = 1
    finally:
        finished.append(True)
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code}\n".encode())
        os._exit(code)


def _tell_memos(tell: int) -> None:
    from .._treememo import KEPT

    def name(path: str) -> None:
        line = os.fsencode(path) + b"\n"
        if len(line) <= select.PIPE_BUF and line.count(b"\n") == 1:  # written whole or not at all
            with contextlib.suppress(BlockingIOError):
                os.write(tell, line)

    KEPT.tell = name


def _receive(conn: socket.socket) -> dict[str, Any]:
    """Read the command's request and take over its descriptors, folder, umask and environment."""
    header, fds, _flags, _addr = socket.recv_fds(conn, 12, 3)
    while len(header) < 12:
        more = conn.recv(12 - len(header))
        if not more:
            raise ConnectionError("the command went away")
        header += more
    count, size, which = header[0], int.from_bytes(header[1:9], "big"), list(header[9 : 9 + header[0]])
    if size > MAX_REQUEST or count != len(fds):
        raise ConnectionError("a malformed request")
    body = bytearray()
    while len(body) < size:
        more = conn.recv(min(1 << 20, size - len(body)))
        if not more:
            raise ConnectionError("the command went away")
        body += more
    request: dict[str, Any] = marshal.loads(bytes(body))
    os.chdir(request["cwd"])  # first: a folder that is gone leaves the command to run itself
    for fd in (0, 1, 2):  # one the command did not have stays the server's /dev/null
        if fd in which:
            os.dup2(fds[which.index(fd)], fd)
    for received in fds:
        if received not in (0, 1, 2):
            os.close(received)
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    sys.argv = ["flyte-images", *request["argv"]]
    _streams(request["streams"], unbuffered=bool(request["env"].get("PYTHONUNBUFFERED")))
    return request


def _streams(streams: dict[str, tuple[str | None, str | None]], *, unbuffered: bool) -> None:
    """New sys.stdin/stdout/stderr on the command's descriptors, as its own Python set them up."""
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        encoding, errors = streams.get(name, (None, None))
        try:
            tty = os.isatty(fd)
            stream: Any = open(  # noqa: SIM115 - it lives as long as the worker
                fd,
                mode,
                encoding=encoding or "utf-8",
                errors=errors or ("backslashreplace" if name == "stderr" else "strict"),
                closefd=False,
                buffering=1 if (tty and mode == "w") else -1,
            )
            if mode == "w" and (unbuffered or name == "stderr"):
                stream.reconfigure(write_through=True)
        except OSError:
            continue
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _watch(conn: socket.socket, finished: list[bool]) -> None:
    """When the command's process goes away, this worker is interrupted (as by Ctrl-C)."""
    import threading

    def wait() -> None:
        with contextlib.suppress(OSError):
            while conn.recv(1024):
                pass
        if not finished:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=wait, name="flyte-images-watch", daemon=True).start()
