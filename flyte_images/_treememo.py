"""A walk's result kept with the stat key of everything it looked at, in memory and in memo
files between processes: while no key changed, the walk's tree is reused (`_files.collect_tree`).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import signal
import stat
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._statcache import _key

if TYPE_CHECKING:
    from ._files import Entry, Tree
    from ._ignore import IgnoreRules
    from ._statcache import StatKey

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass
class _TreeMemo:
    """A walk's result with the stat key of every folder it listed and every file it kept:
    (folder path, its key, the names of its kept files and symlinks joined by NUL, their keys),
    keys packed by `_KEYS`. While none of these keys changed, the walk returns the same tree."""

    tree: Tree
    folders: list[tuple[str, bytes, str, bytes]] = field(default_factory=list)


_KEYS = struct.Struct("<QQqqq")  # a StatKey, packed: device and inode unsigned, times signed


def _pack_keys(keys: Iterable[StatKey]) -> bytes:
    """Stat keys as bytes; struct.error for a value beyond 64 bits (then nothing is remembered)."""
    return b"".join([_KEYS.pack(*key) for key in keys])


def _memo_of(tree: Tree, listed: list[tuple[str, StatKey, list[tuple[str, StatKey]]]]) -> _TreeMemo | None:
    try:
        folders = [(path, _KEYS.pack(*key), "\0".join(n for n, _k in files), _pack_keys(k for _n, k in files))
                   for path, key, files in listed]  # fmt: skip
    except struct.error:
        return None
    return _TreeMemo(tree, folders)


def _memo_valid(memo: _TreeMemo) -> bool:
    """True when no folder or file of the remembered walk changed (one stat each).

    With `FORKS.allowed`, a large walk is checked by several processes at once, each taking a
    share of the folders: a stat costs more in Python than in the kernel, so threads (one GIL)
    do not help, processes do (10k files: 30 ms -> 17 ms on two cores)."""
    folders = memo.folders
    count = FORKS.processes_for(folders)
    if count < 2:
        return _keys_unchanged(folders)
    return _unchanged_in_processes(_shares(folders, count))


def _keys_unchanged(folders: list[tuple[str, bytes, str, bytes]]) -> bool:
    stat_at = os.stat
    for path, key, names, keys in folders:
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except (OSError, ValueError, TypeError):
            return False
        try:
            st = os.fstat(dfd)
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != _KEYS.unpack(key):
                return False
            for name, file_key in zip(names.split("\0") if names else (), _KEYS.iter_unpack(keys), strict=True):
                st = stat_at(name, dir_fd=dfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != file_key:
                    return False
        except OSError:
            return False
        except (ValueError, TypeError, AttributeError, struct.error):  # a memo file of the wrong shape
            return False
        finally:
            os.close(dfd)
    return True


class _Forks:
    """When a memo is checked by forked processes. Off unless a program turns it on: the command
    line does (its process is small, a fork takes ~1 ms); a library's caller may be a process of
    many GB, whose fork costs more than it saves, and may not expect children."""

    allowed = False
    # Files each process checks at least: a fork costs about as much as 400 stats, so a smaller
    # share saves less than it costs (a tree of 4,000 files is checked by two processes).
    min_share = 2000

    def processes_for(self, folders: list[tuple[str, bytes, str, bytes]]) -> int:
        if not self.allowed or not hasattr(os, "fork"):
            return 1
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        files = sum(len(keys) for _p, _k, _n, keys in folders) // _KEYS.size
        return max(1, min(cores, 4, files // self.min_share))


FORKS = _Forks()


def _shares(folders: list[tuple[str, bytes, str, bytes]], count: int) -> list[list[tuple[str, bytes, str, bytes]]]:
    """`folders` cut into at most `count` runs of about as many stats each (a folder goes to the
    run its middle falls in); none empty."""
    total = sum(1 + len(keys) // _KEYS.size for _p, _k, _n, keys in folders)
    shares: list[list[tuple[str, bytes, str, bytes]]] = [[] for _ in range(count)]
    done = 0
    for folder in folders:
        size = 1 + len(folder[3]) // _KEYS.size
        shares[min(count - 1, (2 * done + size) * count // (2 * total))].append(folder)
        done += size
    return [share for share in shares if share]


def _unchanged_in_processes(shares: list[list[tuple[str, bytes, str, bytes]]]) -> bool:
    """`_keys_unchanged` of every share, the first here and the others each in a forked child,
    which answers with its exit status (0: unchanged). A child that fails for any reason counts
    as a change, and so does a fork that fails (then its share is checked here)."""
    import warnings

    children: list[int] = []
    here = [shares[0]]
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks; the child only stats and exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            for share in shares[1:]:
                try:
                    pid = os.fork()
                except OSError:
                    here.append(share)
                    continue
                if pid == 0:  # pragma: no cover - the child's coverage is not collected
                    code = 1
                    try:
                        code = 0 if _keys_unchanged(share) else 1
                    finally:
                        os._exit(code)
                children.append(pid)
        unchanged = all(_keys_unchanged(share) for share in here)
        while children:
            if not unchanged:
                break
            _pid, status = os.waitpid(children[0], 0)
            children.pop(0)
            unchanged = os.waitstatus_to_exitcode(status) == 0
        return unchanged
    finally:
        for pid in children:  # not waited for: a change was found, or this was interrupted
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


# ----- memo files: a tree's memo kept between processes --------------------------------------
#
# One file per (folder, match prefix, rules) in the stat cache's folder, written after a walk
# whose keys are all older than the racy window, exactly when the in-memory memo is kept. A new
# process that finds every key unchanged gets the tree without listing a folder or reading the
# stat cache: one stat per folder and file. The file is the format line, the SHA-256 of the
# rest, then the length of the head, the head (marshal: the key it was written for, the tree's
# size and digest, the folders) and the entries (marshal, unpacked only when asked for). As the
# stat cache file, it is trusted only when it is exactly what we wrote; anything else is ignored
# and replaced by the next walk.

_MEMO_FORMAT = b"flyte-images-tree-memo-1\n"  # change it whenever Entry, the keys or the layout change
_MEMO_HEAD = struct.Struct(">32sQ")  # SHA-256 of the rest, length of the head
# Memo files kept, the most recently written first: at most this many, of at most this many
# bytes in all (the newest is always kept); the others are removed when one is written.
_MEMO_KEEP = 256
_MEMO_KEEP_BYTES = 256 << 20


def _memo_path(folder: Path, memo_key: tuple[str, str, IgnoreRules]) -> tuple[Path, str]:
    root, prefix, rules = memo_key
    ident = repr((root, prefix, tuple((p.text, p.exception) for p in rules.patterns)))
    name = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return folder / f"{name}.bin", ident


def _load_memo(folder: Path, memo_key: tuple[str, str, IgnoreRules]) -> _TreeMemo | None:
    path, ident = _memo_path(folder, memo_key)
    name = str(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        kept = KEPT.get(name, _key(os.fstat(fd)))
        if kept is not None:
            found = _parse_memo(memoryview(kept), checked=True)
        else:
            found = _parse_memo(memoryview(_read_all(fd)))
            if found is not None:
                KEPT.tell_used(name)
    except OSError:
        return None
    finally:
        os.close(fd)
    if found is None or found[0] != ident:
        return None
    _ident, count, digest, folders, packed = found
    from ._files import Tree

    return _TreeMemo(Tree._stored(count, digest, packed, path), folders)


_Parsed = tuple[str, int, str, list[tuple[str, bytes, str, bytes]], bytes]


def _parse_memo(raw: memoryview, *, checked: bool = False) -> _Parsed | None:
    """(what it was written for, the tree's size and digest, the folders, the packed entries)
    of a memo file's bytes; None unless they are exactly what `_save_memo` writes. `checked`:
    the bytes are ones whose checksum held before (kept by `KEPT`)."""
    start = len(_MEMO_FORMAT) + _MEMO_HEAD.size
    if len(raw) < start or raw[: len(_MEMO_FORMAT)] != _MEMO_FORMAT:
        return None
    checksum, size = _MEMO_HEAD.unpack(raw[len(_MEMO_FORMAT) : start])
    if size > len(raw) - start:
        return None
    if not checked and hashlib.sha256(raw[len(_MEMO_FORMAT) + 32 :]).digest() != checksum:
        return None
    try:  # marshal is not meant for damaged input: it only sees bytes whose checksum held
        written_for, count, digest, folders = marshal.loads(raw[start : start + size])
    except (ValueError, EOFError, TypeError):
        return None
    if not (
        type(written_for) is str
        and type(count) is int
        and type(digest) is str
        and len(digest) == 64
        and type(folders) is list
        and all(type(f) is tuple and len(f) == 4 for f in folders)
    ):
        return None
    return written_for, count, digest, folders, bytes(raw[start + size :])


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 22):
        chunks.append(chunk)
    return b"".join(chunks)


class _Kept:
    """Memo files a long-lived process (the warm server) has read and checked, kept as bytes, so
    that the processes it forks find them for one stat: reading one and checking its SHA-256
    takes a few milliseconds (10k files: ~3.5 ms of a 45 ms `flyte-images id`). The bytes are
    trusted while the file's stat key (inode, size, times) is the one it had when read: memo
    files are only ever replaced whole, by a rename. Bytes, not the unpacked memo: a forked
    process that walked objects it shares with its parent would copy every page they are on
    (each reference counted is a write).

    `tell` is set in a forked process: it passes the path of each memo file read or written
    there to the long-lived one, which keeps it (`keep`)."""

    max_files = 16
    max_bytes = 64 << 20

    def __init__(self) -> None:
        self.files: dict[str, tuple[StatKey, bytes]] = {}
        self.tell: Callable[[str], None] | None = None

    def get(self, name: str, file_key: StatKey) -> bytes | None:
        found = self.files.get(name)
        return found[1] if found is not None and found[0] == file_key else None

    def tell_used(self, name: str) -> None:
        if self.tell is not None:
            with contextlib.suppress(Exception):  # only ever a saving for later commands
                self.tell(name)

    def keep(self, name: str) -> None:
        """Read the memo file `name` and keep it (the oldest kept ones go beyond the limits)."""
        try:
            with open(name, "rb") as handle:
                st = os.fstat(handle.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size > self.max_bytes:
                    return
                file_key = _key(st)
                if self.get(name, file_key) is not None:
                    return
                raw = handle.read(st.st_size + 1)
        except OSError:
            return
        self.files.pop(name, None)
        if _parse_memo(memoryview(raw)) is None:
            return
        self.files[name] = (file_key, raw)
        total = 0
        for index, kept in enumerate(reversed(list(self.files))):  # the newest first
            total += len(self.files[kept][1])
            if index and (index >= self.max_files or total > self.max_bytes):
                del self.files[kept]


KEPT = _Kept()


def _save_memo(folder: Path, memo_key: tuple[str, str, IgnoreRules], memo: _TreeMemo) -> None:
    """Write the memo file (best effort: a memo only saves work next time)."""
    from ._statcache import _write_atomically

    path, ident = _memo_path(folder, memo_key)
    tree = memo.tree
    head = marshal.dumps((ident, len(tree.entries), tree.digest, memo.folders))
    rest = struct.pack(">Q", len(head)) + head + marshal.dumps(tuple(_entry_fields(e) for e in tree.entries))
    try:
        _write_atomically(path, _MEMO_FORMAT + hashlib.sha256(rest).digest() + rest)
        KEPT.tell_used(str(path))
        found = sorted(((p.stat(), p) for p in folder.glob("*.bin")), key=lambda f: f[0].st_mtime_ns, reverse=True)
    except OSError:
        return
    total = 0
    for index, (st, old) in enumerate(found):
        total += st.st_size
        if index and (index >= _MEMO_KEEP or total > _MEMO_KEEP_BYTES):
            old.unlink(missing_ok=True)


def _entry_fields(entry: Entry) -> tuple[str, str, int, str, int]:
    return (entry.path, entry.kind, entry.mode, entry.digest, entry.size)
