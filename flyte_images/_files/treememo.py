"""A walk's result kept with the stat key of everything it looked at, in memory and in memo
files between processes: while no key changed, the walk's tree is reused (`_files.collect_tree`).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .entries import Tree
from .statcache import DIR_NOFOLLOW, is_temporary_name, open_cache_folder, read_cache_file, write_atomically

if TYPE_CHECKING:
    from .entries import Entry
    from .ignore import IgnoreRules
    from .statcache import StatKey

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
    """True when no folder or file of the remembered walk changed (one stat each)."""
    return _keys_unchanged(memo.folders)


def _keys_unchanged(folders: list[tuple[str, bytes, str, bytes]]) -> bool:
    stat_at = os.stat
    for path, key, names, keys in folders:
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except (OSError, ValueError):
            return False
        try:
            st = os.fstat(dfd)
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != _KEYS.unpack(key):
                return False
            for name, file_key in zip(names.split("\0") if names else (), _KEYS.iter_unpack(keys), strict=True):
                st = stat_at(name, dir_fd=dfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != file_key:
                    return False
        except (OSError, ValueError):
            return False
        finally:
            os.close(dfd)
    return True


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
# The largest memo file written or read: a file costs ~250 bytes (its entry, name and stat
# key), so this is a tree of about 250,000 files; a larger tree is walked in each process
# (its stat cache still spares the hashing). A larger file is not one we wrote.
_MEMO_MAX_BYTES = 64 << 20
_NAME_HEX = 32  # a memo file is named by this many hex digits of its key's SHA-256, then ".bin"


def _memo_name(memo_key: tuple[str, str, IgnoreRules]) -> tuple[str, str]:
    """(the memo file's name, what it is written for)."""
    root, prefix, rules = memo_key
    ident = repr((root, prefix, tuple((p.text, p.exception) for p in rules.patterns)))
    return f"{hashlib.sha256(ident.encode('utf-8', 'surrogatepass')).hexdigest()[:_NAME_HEX]}.bin", ident


def _is_memo_name(name: str) -> bool:
    return len(name) == _NAME_HEX + 4 and name.endswith(".bin") and all(c in "0123456789abcdef" for c in name[:-4])


def _is_memo_temporary(name: str) -> bool:
    """A name `write_atomically` gives a memo file while writing it."""
    written = name[1 : _NAME_HEX + 5]
    return _is_memo_name(written) and is_temporary_name(name, written)


def _load_memo(folder: Path, memo_key: tuple[str, str, IgnoreRules]) -> _TreeMemo | None:
    """The memo file of `memo_key` in `folder`, when it is exactly one `_save_memo` wrote for it
    (read as `read_cache_file` reads: bounded, never through a symlink, the folder included)."""
    name, ident = _memo_name(memo_key)
    try:
        dfd = os.open(folder, DIR_NOFOLLOW)
    except (OSError, ValueError):
        return None
    try:
        raw = read_cache_file(name, _MEMO_MAX_BYTES, _MEMO_FORMAT, dir_fd=dfd)
    finally:
        os.close(dfd)
    found = None if raw is None else _parse_memo(memoryview(raw), memo_key[0])
    if found is None or found[0] != ident:
        return None
    _ident, count, digest, folders, packed = found

    return _TreeMemo(Tree._stored(count, digest, packed, folder / name), folders)


_Parsed = tuple[str, int, str, list[tuple[str, bytes, str, bytes]], bytes]


def _parse_memo(raw: memoryview, root: str) -> _Parsed | None:
    """(what it was written for, the tree's size and digest, the folders, the packed entries)
    of a memo file's bytes; None unless they are exactly what `_save_memo` writes for a walk of
    `root`."""
    start = len(_MEMO_FORMAT) + _MEMO_HEAD.size
    if len(raw) < start or raw[: len(_MEMO_FORMAT)] != _MEMO_FORMAT:
        return None
    checksum, size = _MEMO_HEAD.unpack(raw[len(_MEMO_FORMAT) : start])
    if size > len(raw) - start:
        return None
    if hashlib.sha256(raw[len(_MEMO_FORMAT) + 32 :]).digest() != checksum:
        return None
    try:  # marshal is not meant for damaged input: it only sees bytes whose checksum held
        written_for, count, digest, folders = marshal.loads(raw[start : start + size])
    except (ValueError, EOFError, TypeError):
        return None
    if not (
        type(written_for) is str
        and type(count) is int
        and count >= 0
        and type(digest) is str
        and len(digest) == 64
        and _folders_well_formed(folders, root)
    ):
        return None
    return written_for, count, digest, folders, bytes(raw[start + size :])


def _folders_well_formed(folders: object, root: str) -> bool:
    """True for the folder list of a walk of `root`: the root first (a walk always lists it, and
    a list without it, even an empty one, would check nothing and so pass as unchanged for
    ever), then (path, packed key, NUL-joined names, one packed key per name) for each folder."""
    if type(folders) is not list or not folders:
        return False
    first = folders[0]
    if type(first) is not tuple or not first or first[0] != root:
        return False
    size = _KEYS.size
    return all(
        type(f) is tuple
        and len(f) == 4
        and type(f[0]) is str
        and type(f[1]) is bytes
        and len(f[1]) == size
        and type(f[2]) is str
        and type(f[3]) is bytes
        and len(f[3]) == (f[2].count("\0") + 1 if f[2] else 0) * size
        for f in folders
    )


def _save_memo(folder: Path, memo_key: tuple[str, str, IgnoreRules], memo: _TreeMemo) -> None:
    """Write the memo file (best effort: a memo only saves work next time), and remove the
    oldest beyond the limits. `folder` is never followed when it is a symlink, and only names
    this module writes are ever removed from it."""
    name, ident = _memo_name(memo_key)
    tree = memo.tree
    head = marshal.dumps((ident, len(tree.entries), tree.digest, memo.folders))
    rest = struct.pack(">Q", len(head)) + head + marshal.dumps(tuple(_entry_fields(e) for e in tree.entries))
    if len(_MEMO_FORMAT) + 32 + len(rest) > _MEMO_MAX_BYTES:
        return  # it would be refused when read back
    try:
        dfd = open_cache_folder(folder)
    except (OSError, ValueError):
        return
    try:
        write_atomically(dfd, name, _MEMO_FORMAT + hashlib.sha256(rest).digest() + rest)
        _prune(dfd)
    except OSError:
        return
    finally:
        os.close(dfd)


def _prune(dfd: int) -> None:
    """Keep the newest memo files within `_MEMO_KEEP` and `_MEMO_KEEP_BYTES`; remove temporary
    files left by a process killed while writing one, once they are an hour old."""
    found = []
    stale = time.time() - 3600
    with os.scandir(dfd) as items:
        for item in items:
            with contextlib.suppress(OSError):
                if _is_memo_name(item.name):
                    st = item.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        found.append((st.st_mtime_ns, st.st_size, item.name))
                elif _is_memo_temporary(item.name) and item.stat(follow_symlinks=False).st_mtime < stale:
                    os.unlink(item.name, dir_fd=dfd)
    found.sort(reverse=True)
    total = 0
    for index, (_mtime, size, old) in enumerate(found):
        total += size
        if index and (index >= _MEMO_KEEP or total > _MEMO_KEEP_BYTES):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old, dir_fd=dfd)


def _entry_fields(entry: Entry) -> tuple[str, str, int, str, int]:
    return (entry.path, entry.kind, entry.mode, entry.digest, entry.size)
