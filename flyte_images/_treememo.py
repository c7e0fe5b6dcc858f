"""A walk's result kept with the stat key of everything it looked at, in memory and in memo
files between processes: while no key changed, the walk's tree is reused (`_files.collect_tree`).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
    """True when no folder or file of the remembered walk changed (one stat each)."""
    stat_at = os.stat
    for path, key, names, keys in memo.folders:
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
    try:
        raw = memoryview(path.read_bytes())
    except OSError:
        return None
    start = len(_MEMO_FORMAT) + _MEMO_HEAD.size
    if len(raw) < start or raw[: len(_MEMO_FORMAT)] != _MEMO_FORMAT:
        return None
    checksum, size = _MEMO_HEAD.unpack(raw[len(_MEMO_FORMAT) : start])
    if hashlib.sha256(raw[len(_MEMO_FORMAT) + 32 :]).digest() != checksum or size > len(raw) - start:
        return None
    try:  # marshal is not meant for damaged input: it only sees bytes whose checksum held
        written_for, count, digest, folders = marshal.loads(raw[start : start + size])
    except (ValueError, EOFError, TypeError):
        return None
    if not (
        written_for == ident
        and type(count) is int
        and type(digest) is str
        and len(digest) == 64
        and type(folders) is list
        and all(type(f) is tuple and len(f) == 4 for f in folders)
    ):
        return None
    from ._files import Tree

    return _TreeMemo(Tree._stored(count, digest, bytes(raw[start + size :]), path), folders)


def _save_memo(folder: Path, memo_key: tuple[str, str, IgnoreRules], memo: _TreeMemo) -> None:
    """Write the memo file (best effort: a memo only saves work next time)."""
    from ._statcache import _write_atomically

    path, ident = _memo_path(folder, memo_key)
    tree = memo.tree
    head = marshal.dumps((ident, len(tree.entries), tree.digest, memo.folders))
    rest = struct.pack(">Q", len(head)) + head + marshal.dumps(tuple(_entry_fields(e) for e in tree.entries))
    try:
        _write_atomically(path, _MEMO_FORMAT + hashlib.sha256(rest).digest() + rest)
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
