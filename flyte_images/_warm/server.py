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
    "flyte_images._warm.spare",
    "tarfile",
    "gzip",
    "argparse",
    "ctypes",
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
    # Workers write on this pipe the memo files they read or wrote (the server keeps them for
    # the next workers, `_treememo.KEPT`) and, a spare, that it took a command.
    notes, tell = os.pipe()
    # A child that ends wakes the server (then a spare can be forked): SIGCHLD writes here.
    wake, woken = os.pipe()
    for fd in (notes, tell, wake, woken):
        os.set_blocking(fd, False)  # a worker never waits for the server to listen
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(woken, warn_on_full_buffer=False)
    server = _Server(listener, lock, (notes, tell, wake, woken))
    last = time.monotonic()
    while not stopping:
        if server.read_notes():
            last = time.monotonic()
        server.reap()
        if not server.workers and time.monotonic() - last > idle:
            return  # a spare sees the server gone within a second and exits
        if server.spare is None and server.spares and not server.workers:
            server.fork_spare()
        watch = [notes, wake] + ([listener.fileno()] if server.spare is None else [])
        try:
            ready, _w, _x = select.select(watch, [], [], 1.0)
        except InterruptedError:
            continue
        if wake in ready:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while os.read(wake, 4096):
                    pass
        if listener.fileno() in ready and server.spare is None:
            with contextlib.suppress(TimeoutError, InterruptedError, BlockingIOError):
                conn, _ = listener.accept()
                last = time.monotonic()
                server.fork_worker(conn)


class _Server:
    """The server's children: workers running commands, and at most one spare (see `spare`)."""

    def __init__(self, listener: socket.socket, lock: int, pipes: tuple[int, int, int, int]) -> None:
        self.listener, self.lock, self.pipes = listener, lock, pipes
        self.workers: set[int] = set()
        self.spare: int | None = None
        self.spares = True  # off for good once a spare ends without a command: no fork loop
        self._pending = b""

    def _child(self) -> None:
        """What every child does first: drop what only the server needs."""
        signal.set_wakeup_fd(-1)
        os.close(self.lock)
        notes, _tell, wake, woken = self.pipes
        for fd in (notes, wake, woken):
            os.close(fd)

    def fork_worker(self, conn: socket.socket) -> None:
        with conn:
            if not _same_user(conn):
                return
            try:
                pid = os.fork()
            except OSError:
                return  # the command sees the connection close before a pid: it runs itself
            if pid == 0:
                # A worker holds neither the socket nor the lock: a server that ends while a
                # long build still runs can be replaced at once.
                self._child()
                self.listener.close()
                _work(conn, self.pipes[1])  # never returns
            self.workers.add(pid)

    def fork_spare(self) -> None:
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            self.spares = False
            return
        if pid == 0:
            code = 1
            try:
                self._child()
                for name in ("SIGTERM", "SIGINT", "SIGCHLD"):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
                from .spare import wait_for_command

                conn = wait_for_command(self.listener, server)
                if conn is None:
                    code = 0
                else:
                    with contextlib.suppress(OSError):
                        os.write(self.pipes[1], f"took {os.getpid()}\n".encode())
                    self.listener.close()
                    _work(conn, self.pipes[1])  # never returns
            finally:
                os._exit(code)
        self.spare = pid

    def read_notes(self) -> bool:
        """Take in what the children wrote: memo files to keep, spares that took a command.
        True when a command was taken."""
        from .._treememo import KEPT

        with contextlib.suppress(BlockingIOError, InterruptedError):
            while chunk := os.read(self.pipes[0], 65536):
                self._pending += chunk
        *lines, rest = self._pending.split(b"\n")
        self._pending = rest[-65536:]
        took = kept = False
        for line in dict.fromkeys(lines):
            kind, _, value = line.partition(b" ")
            if kind == b"took" and value.isdigit():
                pid = int(value)
                self.workers.add(pid)
                if pid == self.spare:
                    self.spare = None
                took = True
            elif kind == b"memo":
                with contextlib.suppress(Exception):
                    KEPT.keep(os.fsdecode(value))
                    kept = True
        if kept:
            gc.freeze()  # as the imports: kept out of the collector, shared with workers as they are
        return took

    def reap(self) -> None:
        _reap(self.workers)
        if self.spare is not None:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(self.spare, os.WNOHANG)[0] == 0:
                    return
            self.read_notes()  # a spare that took a command and is done already said so
            if self.spare is not None:
                self.spare = None
                self.spares = False  # it ended without taking a command: the server accepts itself


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
        line = b"memo " + os.fsencode(path) + b"\n"
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
