"""The files an image reads: one walk gives the list that is both hashed and staged.

`collect_tree(root, rules)` walks a folder sorted by name at every level, applies the ignore
rules, and returns a `Tree` of `Entry` values (relative POSIX path, kind, permission bits, the
SHA-256 of a file's bytes or a symlink's text); absolute paths, owners and times never leave
this module. Files are opened relative to their folder's descriptor and `fstat`ed through the
open file, so a cold walk costs one open, one fstat and the reads per file; with the stat
cache and the memos (`treememo`), an unchanged tree costs one `stat` per file and folder.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import SourceError, SourceNotFoundError
from .entries import DIR, FILE, LINK, Entry, Tree
from .ignore import IgnoreRules
from .statcache import StatCache, StatKey, _key
from .treememo import Listed, recall, remember

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from .staging import Snapshot

_CHUNK = 1 << 20
# Files at least this large are hashed on a pool of one thread per core while the walk goes
# on; smaller ones are hashed at once (a pool's per-file cost would exceed their hashing).
_PARALLEL_MIN = 4 << 20
_CORES = os.cpu_count() or 1
_MAX_PENDING = 64
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def hash_and_close(fd: int) -> str:
    try:
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


@dataclass
class _Frame:
    """A folder being listed; its descriptor is closed while a subfolder is walked."""

    rel: str
    path: str
    items: list[tuple[str, str | None]]
    match_rel: str
    state: tuple[bool, ...]
    mark: int  # index of the folder's own entry, -1 for the root
    drop: bool  # excluded itself: kept only as the parent of re-included paths
    files: list[tuple[str, StatKey]]
    excluded: Callable[[str], bool]
    dfd: int | None
    pos: int = 0


@dataclass
class _Walk:
    """One walk of one folder; `entries` in sorted depth-first order. Iterative, so any depth
    works; at most one folder descriptor is open at a time.

    With a `Snapshot`, every kept path is also staged at `dest` + its path, and the digest of a
    file is that of the staged copy (see `Snapshot.copy_file`)."""

    root: str
    rules: IgnoreRules
    cache: StatCache | None
    prefix: str
    snap: Snapshot | None
    dest: str
    entries: list[Entry] = field(default_factory=list)
    listed: Listed = field(default_factory=list)
    hashed: list[tuple[StatKey, str]] = field(default_factory=list)
    deferred: list[tuple[int, Future[str], os.stat_result]] = field(default_factory=list)  # (entry, digest, stat)
    _pool: ThreadPoolExecutor | None = None

    def _hash_later(self, fd: int, st: os.stat_result) -> str:
        """Hash a large file on another core (hashlib releases the GIL while it hashes); `finish`
        puts the digest into its entry."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # here: `import flyte_images` stays cheap

            self._pool = ThreadPoolExecutor(max_workers=_CORES, thread_name_prefix="flyte-images-hash")
        if len(self.deferred) >= _MAX_PENDING:  # bound open descriptors
            self.deferred[-_MAX_PENDING][1].result()
        self.deferred.append((len(self.entries), self._pool.submit(hash_and_close, fd), st))
        return ""

    def finish(self, complete: bool = True) -> None:
        """Wait for the large files' digests and put them into their entries."""
        try:
            for index, future, st in self.deferred if complete else ():
                digest = future.result()
                entry = self.entries[index]
                self.entries[index] = Entry(entry.path, FILE, entry.mode, digest, entry.size)
                self.hashed.append((_key(st), digest))
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def run(self, state: tuple[bool, ...]) -> None:
        stack = [self._frame("", state, -1, False)]
        while stack:
            frame = stack[-1]
            if frame.pos == len(frame.items):
                stack.pop()
                if frame.dfd is not None:
                    os.close(frame.dfd)
                if frame.drop and len(self.entries) == frame.mark + 1:
                    dropped = self.entries.pop()  # an excluded folder nothing below was kept in
                    if self.snap is not None:
                        self.snap.unstage(self.dest + dropped.path)
                continue
            name, kind = frame.items[frame.pos]
            frame.pos += 1
            if kind is None:
                continue  # sockets, fifos, devices: Docker does not copy them either
            child = f"{frame.rel}/{name}" if frame.rel else name
            match_child = f"{frame.match_rel}/{name}" if frame.match_rel else name
            drop = frame.excluded(match_child)
            dfd = frame.dfd
            if dfd is None:
                dfd = frame.dfd = os.open(frame.path, _DIR_FLAGS)
            if kind == DIR:
                if not drop or self.rules.has_exceptions:
                    mode = stat.S_IMODE(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
                    self.entries.append(Entry(child, DIR, mode))
                    if self.snap is not None:
                        self.snap.folder(self.dest + child, mode)
                    os.close(dfd)
                    frame.dfd = None
                    state = self.rules.state_for_dir(frame.state, match_child)
                    stack.append(self._frame(child, state, len(self.entries) - 1, drop))
            elif not drop:
                self.entries.append(self._leaf(dfd, name, child, kind, frame.files))

    def _frame(self, rel: str, state: tuple[bool, ...], mark: int, drop: bool) -> _Frame:
        path = f"{self.root}/{rel}" if rel else self.root
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except PermissionError as exc:
            raise SourceError(f"cannot list {path}: permission denied; fix its permissions") from exc
        files: list[tuple[str, StatKey]] = []
        self.listed.append((path, _key(os.fstat(dfd)), files))
        with os.scandir(dfd) as it:
            listing = sorted((item.name, _kind(item)) for item in it)
        match_rel = self.prefix + rel if rel else self.prefix.rstrip("/")
        return _Frame(rel, path, listing, match_rel, state, mark, drop, files, self.rules.checker(state), dfd)

    def _leaf(self, dfd: int, name: str, child: str, kind: str, files: list[tuple[str, StatKey]]) -> Entry:
        if kind == LINK:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            files.append((name, _key(st)))
            entry = Entry(child, LINK, stat.S_IMODE(st.st_mode), os.readlink(name, dir_fd=dfd))
            if self.snap is not None:
                self.snap.link(self.dest + child, entry.digest)
            return entry
        if self.snap is not None:
            st, digest, read = self.snap.copy_file(dfd, name, self.dest + child, f"{child} in {self.root}:")
            if read:  # an unchanged file's digest was learnt when it was copied
                self.hashed.append((_key(st), digest))
            return Entry(child, FILE, stat.S_IMODE(st.st_mode), digest, st.st_size)
        cached: str | None = None
        if self.cache is not None:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            cached = self.cache.get(_key(st))
        if cached is None:
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=dfd)
            except PermissionError as exc:
                raise SourceError(f"cannot read {child} in {self.root}: permission denied") from exc
            except OSError as exc:
                raise SourceError(f"{child} in {self.root} changed while being read ({exc.strerror})") from exc
            st = os.fstat(fd)
            if st.st_size >= _PARALLEL_MIN and _CORES > 1:
                cached = self._hash_later(fd, st)  # the pool closes fd
            else:
                cached = hash_and_close(fd)
                self.hashed.append((_key(st), cached))
        files.append((name, _key(st)))
        return Entry(child, FILE, stat.S_IMODE(st.st_mode), cached, st.st_size)


def _kind(item: os.DirEntry[str]) -> str | None:
    if item.is_symlink():
        return LINK
    if item.is_dir(follow_symlinks=False):
        return DIR
    if item.is_file(follow_symlinks=False):
        return FILE
    return None


def collect_tree(
    root: Path,
    rules: IgnoreRules,
    cache: StatCache | None = None,
    match_prefix: str = "",
    snap: Snapshot | None = None,
    dest: str = "",
) -> Tree:
    """Every path below `root` that the rules keep, with digests, sorted at every level.

    A folder is listed when it is kept, or when something below it is kept (an excluded folder
    with a re-included file is created as that file's parent, as Docker does). `match_prefix`
    ("sub/dir/") is the position of `root` below the folder whose .dockerignore the rules are:
    patterns are matched against that longer path; entries keep paths relative to `root`.
    With `snap`, the tree is staged at `dest` (a folder of mode 755) while it is read.
    """
    if not root.is_dir():
        if root.exists():
            raise SourceError(f"{root} is not a folder: pass a folder, or use with_source_file for a file")
        raise SourceNotFoundError(f"folder {root} does not exist")
    if snap is not None:
        snap.folder(dest, 0o755)
    memo_key = (str(root), match_prefix, rules)
    if cache is not None and snap is None and (remembered := recall(cache, memo_key)) is not None:
        return remembered
    if match_prefix and rules.excluded(match_prefix.rstrip("/")) and not rules.has_exceptions:
        return Tree(())
    walk = _Walk(str(root), rules, cache, match_prefix, snap, f"{dest}/" if dest else "")
    try:
        walk.run(rules.state_for_dir(None, match_prefix.rstrip("/")))
    except BaseException:
        walk.finish(complete=False)
        raise
    walk.finish()
    tree = Tree(tuple(walk.entries))
    if cache is not None:
        now = time.time_ns()
        for key, digest in walk.hashed:
            cache.put(key, digest, now)
        cache.save()
        if snap is None:
            remember(cache, memo_key, tree, walk.listed, now)
    return tree
