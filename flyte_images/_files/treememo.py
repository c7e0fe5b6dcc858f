"""A walk's result kept with the stat key of everything it looked at, in memory and in memo
files between processes: while no key changed, the walk's tree is reused (`tree.collect_tree`).

One memo file per (folder, match prefix, rules), written when every key is older than the racy
window; a new process that finds every key unchanged gets the tree with one stat per folder and
file. It is `seal`ed (see `statcache`); the payload is the length of the head, the head (marshal:
the key it was written for, the tree's size and digest, the folders) and the entries (marshal,
unpacked only when asked for).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .entries import Tree
from .statcache import (
    DIR_NOFOLLOW,
    _key,
    _racy,
    is_temporary_name,
    open_cache_folder,
    read_cache_file,
    seal,
    unmarshal,
    unseal,
    write_atomically,
)

if TYPE_CHECKING:
    from .ignore import IgnoreRules
    from .statcache import StatCache, StatKey

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_KEYS = struct.Struct("<QQqqq")  # a StatKey, packed: device and inode unsigned, times signed
_SIZE = struct.Struct(">Q")
_MEMO_FORMAT = b"flyte-images-tree-memo-1\n"  # change it whenever Entry, the keys or the layout change
# Memo files kept, the most recently written first: at most this many, of at most this many
# bytes in all (the newest is always kept); the others are removed when one is written.
_MEMO_KEEP = 256
_MEMO_KEEP_BYTES = 256 << 20
# The largest memo file written or read: a file costs ~250 bytes (its entry, name and stat
# key), so this is a tree of about 250,000 files; a larger tree is walked in each process
# (its stat cache still spares the hashing). A larger file is not one we wrote.
_MEMO_MAX_BYTES = 64 << 20
_NAME_HEX = 32  # a memo file is named by this many hex digits of its key's SHA-256, then ".bin"

Listed = list[tuple[str, "StatKey", list[tuple[str, "StatKey"]]]]  # (folder, its key, its kept files' names and keys)


@dataclass
class _TreeMemo:
    """A walk's result with the stat key of every folder it listed and every file it kept:
    (folder path, its key, the names of its kept files and symlinks joined by NUL, their keys),
    keys packed by `_KEYS`. While none of these keys changed, the walk returns the same tree."""

    tree: Tree
    folders: list[tuple[str, bytes, str, bytes]]


def recall(cache: StatCache, memo_key: tuple[str, str, IgnoreRules]) -> Tree | None:
    """The tree remembered for `memo_key` (in memory, else in its memo file) while nothing it
    covers changed."""
    memo = cache.trees.get(memo_key)
    if not isinstance(memo, _TreeMemo) and cache.memo_dir is not None:
        memo = _load_memo(cache.memo_dir, memo_key)
        if memo is not None:
            cache.trees[memo_key] = memo
    return memo.tree if isinstance(memo, _TreeMemo) and _memo_valid(memo) else None


def remember(cache: StatCache, memo_key: tuple[str, str, IgnoreRules], tree: Tree, listed: Listed, now: int) -> None:
    """Keep `tree` for `memo_key` unless a key it covers is too recent (at `now`) to be trusted
    or does not fit 64 bits."""
    if any(_racy(key, now) for _p, key, files in listed for key in (key, *(k for _n, k in files))):
        return
    try:
        pack = _KEYS.pack
        folders = [(path, pack(*key), "\0".join(n for n, _k in files), b"".join(pack(*k) for _n, k in files))
                   for path, key, files in listed]  # fmt: skip
    except struct.error:
        return
    memo = cache.trees[memo_key] = _TreeMemo(tree, folders)
    if cache.memo_dir is not None:
        _save_memo(cache.memo_dir, memo_key, memo)


def _memo_valid(memo: _TreeMemo) -> bool:
    """True when no folder or file of the remembered walk changed (one stat each)."""
    for path, key, names, keys in memo.folders:
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except (OSError, ValueError):
            return False
        try:
            if _key(os.fstat(dfd)) != _KEYS.unpack(key):
                return False
            for name, file_key in zip(names.split("\0") if names else (), _KEYS.iter_unpack(keys), strict=True):
                if _key(os.stat(name, dir_fd=dfd, follow_symlinks=False)) != file_key:
                    return False
        except (OSError, ValueError):
            return False
        finally:
            os.close(dfd)
    return True


def _memo_name(memo_key: tuple[str, str, IgnoreRules]) -> tuple[str, str]:
    """(the memo file's name, what it is written for)."""
    root, prefix, rules = memo_key
    ident = repr((root, prefix, tuple((p.text, p.exception) for p in rules.patterns)))
    return f"{hashlib.sha256(ident.encode('utf-8', 'surrogatepass')).hexdigest()[:_NAME_HEX]}.bin", ident


def _is_memo_name(name: str) -> bool:
    return len(name) == _NAME_HEX + 4 and name.endswith(".bin") and all(c in "0123456789abcdef" for c in name[:-4])


def _load_memo(folder: Path, memo_key: tuple[str, str, IgnoreRules]) -> _TreeMemo | None:
    """The memo file of `memo_key` in `folder`, when it is exactly one `_save_memo` wrote for it
    (read as `read_cache_file` reads: bounded, never through a symlink, the folder included)."""
    name, ident = _memo_name(memo_key)
    try:
        dfd = os.open(folder, DIR_NOFOLLOW)
    except (OSError, ValueError):
        return None
    try:
        payload = unseal(read_cache_file(name, _MEMO_MAX_BYTES, _MEMO_FORMAT, dir_fd=dfd), _MEMO_FORMAT)
    finally:
        os.close(dfd)
    if payload is None or len(payload) < _SIZE.size:
        return None
    (size,) = _SIZE.unpack(payload[: _SIZE.size])
    start = _SIZE.size + size
    head = unmarshal(payload[_SIZE.size : start]) if start <= len(payload) else None
    if not (type(head) is tuple and len(head) == 4 and head[0] == ident):
        return None
    _ident, count, digest, folders = head
    if not (
        type(count) is int
        and count >= 0
        and type(digest) is str
        and len(digest) == 64
        and _folders_well_formed(folders, memo_key[0])
    ):
        return None
    return _TreeMemo(Tree._stored(count, digest, bytes(payload[start:]), folder / name), folders)


def _folders_well_formed(folders: Any, root: str) -> bool:
    """True for the folder list of a walk of `root`: the root first (a walk always lists it, and
    a list without it, even an empty one, would check nothing and so pass as unchanged for
    ever), then (path, packed key, NUL-joined names, one packed key per name) for each folder."""
    if type(folders) is not list or not folders or type(folders[0]) is not tuple or not folders[0]:
        return False
    size = _KEYS.size
    return folders[0][0] == root and all(
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
    entries = marshal.dumps(tuple((e.path, e.kind, e.mode, e.digest, e.size) for e in tree.entries))
    data = seal(_MEMO_FORMAT, _SIZE.pack(len(head)) + head + entries)
    if len(data) > _MEMO_MAX_BYTES:
        return  # it would be refused when read back
    with contextlib.suppress(OSError, ValueError):
        dfd = open_cache_folder(folder)
        try:
            write_atomically(dfd, name, data)
            _prune(dfd)
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
                elif (
                    _is_memo_name(item.name[1 : _NAME_HEX + 5])
                    and is_temporary_name(item.name, item.name[1 : _NAME_HEX + 5])
                    and item.stat(follow_symlinks=False).st_mtime < stale
                ):
                    os.unlink(item.name, dir_fd=dfd)
    found.sort(reverse=True)
    total = 0
    for index, (_mtime, size, old) in enumerate(found):
        total += size
        if index and (index >= _MEMO_KEEP or total > _MEMO_KEEP_BYTES):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old, dir_fd=dfd)
