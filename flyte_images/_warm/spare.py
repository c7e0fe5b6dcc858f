"""The spare worker: forked by the server before a command arrives, it waits on the socket itself.

A worker forked when a command arrives starts with every page of memory shared with the
server: the first write to each page the command touches (and Python writes to every object it
uses: its reference count) copies that page, a few milliseconds of page faults per command,
after the fork itself. A spare is forked while nothing runs, copies the pages the server has in
memory in the meantime (`prefault`), and is already waiting when the command connects: the
command pays for neither.

The server forks a spare only while no command runs (a spare copying pages would take a core
from it) and accepts commands itself while there is none. A spare stops copying as soon as a
command is waiting, exits when the server has gone (within a second), and reports the command
it takes on the server's pipe ("took PID"), so the server knows it is busy.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Callable

# madvise(2): fault the range in, writable (Linux 5.14+): a private page shared with the parent
# is copied, as by a write. Nothing else changes.
_MADV_POPULATE_WRITE = 23
_CHUNK = 2 << 20  # bytes prefaulted between two looks at the socket


def prefault(stop: Callable[[], bool]) -> int:
    """Copy every page of this process that is in memory and shared with the parent, stopping
    early when `stop()` says so; the bytes done (0 where the system cannot: no ctypes, no
    madvise flag)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        madvise, mincore = libc.madvise, libc.mincore
    except (ImportError, OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    done = 0
    for low, high in _private_writable():
        pages = (high - low) // page
        resident = (ctypes.c_ubyte * pages)()
        if mincore(low, high - low, resident) != 0:
            continue
        for start, end in _runs(resident, low, page):
            for chunk in range(start, end, _CHUNK):
                if stop():
                    return done
                size = min(_CHUNK, end - chunk)
                if madvise(chunk, size, _MADV_POPULATE_WRITE) != 0:
                    return done  # an older kernel: nothing more to gain
                done += size
    return done


def _private_writable() -> list[tuple[int, int]]:
    """The address ranges of this process's private writable memory (heap, arenas, data)."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) < 2 or fields[1] != "rw-p":
                    continue
                if len(fields) > 5 and fields[5].startswith("[") and fields[5] != "[heap]":
                    continue  # the stack, vvar, vsyscall
                low, high = (int(x, 16) for x in fields[0].split("-"))
                found.append((low, high))
    except OSError:
        return []
    return found


def _runs(resident: object, low: int, page: int) -> list[tuple[int, int]]:
    """The address ranges of the pages `mincore` reported in memory."""
    flags = bytes(resident)  # type: ignore[call-overload]
    runs = []
    index, count = 0, len(flags)
    while index < count:
        if not flags[index] & 1:
            index += 1
            continue
        start = index
        while index < count and flags[index] & 1:
            index += 1
        runs.append((low + start * page, low + index * page))
    return runs


def wait_for_command(listener: socket.socket, server: int) -> socket.socket | None:
    """Copy the shared pages, then accept a command from the same user; None when the server
    has gone (this spare then exits without a command)."""

    def waiting() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return bool(select.select([listener], [], [], 0)[0])
        return True

    prefault(waiting)
    from .server import _same_user

    while True:
        try:
            conn, _ = listener.accept()  # the server's 1 s timeout: a look at the server each second
        except (TimeoutError, BlockingIOError, InterruptedError):
            if os.getppid() != server:
                return None
            continue
        except OSError:
            return None
        if _same_user(conn):
            return conn
        conn.close()
