"""The files an image reads: one walk gives the list that is both hashed and staged.

`collect_tree(root, rules)` walks a folder with directory entries sorted by name at every level,
applies the ignore rules, and returns `Entry` values: the relative POSIX path, the kind (file,
folder, symlink), the permission bits, and for files the SHA-256 of the bytes (for symlinks the
link text). Absolute paths, owners and times never leave this module.

File digests are kept in a stat cache keyed on (device, inode, size, mtime_ns, ctime_ns), so a
repeated identifier of an unchanged tree costs one `lstat` per file. The cache is kept in memory
and in a file under the user cache folder. It is off when `CI` is set (fresh checkouts gain
nothing from it) and whenever `FLYTE_IMAGES_STAT_CACHE=0`; `FLYTE_IMAGES_STAT_CACHE=1` forces it
on. Entries whose times are within two seconds of the moment they were read are not kept: a file
written again within the same timestamp tick could otherwise keep a stale digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ._errors import SourceError, SourceNotFoundError
from ._ignore import IgnoreRules

FILE, DIR, LINK = "file", "dir", "symlink"
_RACY_NS = 2_000_000_000
_CHUNK = 1 << 20
_CACHE_FORMAT = b"flyte-images-stat-cache-1\n"
_CACHE_MAX_ENTRIES = 1_000_000

StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Entry:
    """One path of a copied tree, relative to the tree's root, '/'-separated."""

    path: str
    kind: str
    mode: int
    digest: str = ""  # sha256 hex of a file's bytes; a symlink's target; "" for a folder
    size: int = 0

    def identity(self) -> tuple[str, str, int, str]:
        return (self.path, self.kind, self.mode, self.digest)


def stat_cache_enabled() -> bool:
    forced = os.environ.get("FLYTE_IMAGES_STAT_CACHE")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "off", "")
    return not os.environ.get("CI")


def cache_dir() -> Path:
    explicit = os.environ.get("FLYTE_IMAGES_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flyte-images"


class StatCache:
    """Digest per stat key, in memory, loaded from and saved to one file (atomically)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._digests: dict[StatKey, str] | None = None
        self._dirty = False
        self._lock = threading.Lock()
        # In-process only: a folder's sorted listing with its ignore decisions, keyed on the
        # folder's own stat and the rules, so an unchanged folder is not listed or matched again.
        self.listings: dict[tuple[str, str, StatKey, IgnoreRules], list[tuple[str, str, bool]]] = {}

    def _load(self) -> dict[StatKey, str]:
        if self._digests is None:
            self._digests = {}
            if self._path is not None:
                with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
                    raw = self._path.read_bytes()
                    if raw.startswith(_CACHE_FORMAT):
                        loaded = marshal.loads(raw[len(_CACHE_FORMAT) :])
                        if isinstance(loaded, dict):
                            self._digests = loaded
        return self._digests

    def get(self, key: StatKey) -> str | None:
        return self._load().get(key)

    def put(self, key: StatKey, digest: str, now_ns: int) -> None:
        if now_ns - key[3] < _RACY_NS or now_ns - key[4] < _RACY_NS:
            return
        with self._lock:
            digests = self._load()
            if len(digests) >= _CACHE_MAX_ENTRIES:
                digests.clear()
            digests[key] = digest
            self._dirty = True

    def save(self) -> None:
        """Write the cache file if anything was added; a failure to write is not an error."""
        if not self._dirty or self._path is None or self._digests is None:
            return
        with contextlib.suppress(OSError):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stat-cache-", dir=self._path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(_CACHE_FORMAT + marshal.dumps(self._digests))
                os.replace(tmp, self._path)
                self._dirty = False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


_shared_cache: StatCache | None = None


def shared_stat_cache(enabled: bool | None = None) -> StatCache | None:
    """The process-wide stat cache, or None when it is off (`enabled` overrides the environment)."""
    global _shared_cache  # noqa: PLW0603 - one cache per process is the point
    if not (stat_cache_enabled() if enabled is None else enabled):
        return None
    if _shared_cache is None:
        _shared_cache = StatCache(cache_dir() / "stat-cache-v1.marshal")
    return _shared_cache


def reset_shared_stat_cache() -> None:
    """Forget the in-memory cache (the file stays); used by tests and benchmarks."""
    global _shared_cache  # noqa: PLW0603
    _shared_cache = None


def _key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_file(path: str) -> str:
    """SHA-256 hex of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _listing(
    directory: str, match_rel: str, rules: IgnoreRules, state: tuple[bool, ...], cache: StatCache | None
) -> list[tuple[str, str, bool]]:
    """Sorted (name, kind, excluded) of one folder; memoised while the folder is unchanged."""
    memo_key = None
    if cache is not None:
        st = os.lstat(directory)
        memo_key = (directory, match_rel, _key(st), rules)
        found = cache.listings.get(memo_key)
        if found is not None:
            return found
    rows: list[tuple[str, str, bool]] = []
    with os.scandir(directory) as it:
        for item in it:
            if item.is_symlink():
                kind = LINK
            elif item.is_dir():
                kind = DIR
            elif item.is_file():
                kind = FILE
            else:
                continue  # sockets, fifos, devices: Docker cannot copy them either
            path = f"{match_rel}/{item.name}" if match_rel else item.name
            rows.append((item.name, kind, rules.excluded_with(state, path)))
    rows.sort()
    if cache is not None and memo_key is not None:
        now = time.time_ns()
        if now - memo_key[2][3] >= _RACY_NS and now - memo_key[2][4] >= _RACY_NS:
            cache.listings[memo_key] = rows
    return rows


def _walk(
    root: str, rel: str, prefix: str, rules: IgnoreRules, state: tuple[bool, ...], cache: StatCache | None
) -> Iterator[tuple[str, str, os.stat_result | None, bool]]:
    """Yield (relative path, kind, lstat, excluded) in sorted depth-first order.

    `prefix` is where `root` sits relative to the folder the rules were written for.
    """
    directory = os.path.join(root, rel) if rel else root
    match_rel = prefix + rel if rel else prefix.rstrip("/")
    for name, kind, excluded in _listing(directory, match_rel, rules, state, cache):
        path = f"{rel}/{name}" if rel else name
        if kind == DIR:
            if excluded and not rules.has_exceptions:
                continue  # nothing below an excluded folder can come back
            yield path, kind, None, excluded
            child_state = rules.state_for_dir(state, prefix + path)
            yield from _walk(root, path, prefix, rules, child_state, cache)
        elif not excluded:
            yield path, kind, os.lstat(os.path.join(root, path)), False


def collect_tree(
    root: Path, rules: IgnoreRules, cache: StatCache | None = None, match_prefix: str = ""
) -> tuple[Entry, ...]:
    """Every path below `root` that the rules keep, with digests, sorted at every level.

    A folder is listed when it is kept, or when something below it is kept (an excluded folder
    with a re-included file is created as that file's parent, as Docker does). `match_prefix`
    ("sub/dir/") is the position of `root` below the folder whose .dockerignore the rules are:
    patterns are matched against that longer path, entries keep paths relative to `root`.
    """
    if not root.is_dir():
        if root.exists():
            raise SourceError(f"{root} is not a folder: pass a folder, or use with_source_file for a file")
        raise SourceNotFoundError(f"folder {root} does not exist")
    top = str(root)
    rows: list[tuple[str, str, os.stat_result | None, bool]] = []
    start = rules.state_for_dir(None, match_prefix.rstrip("/"))
    if match_prefix and rules.excluded(match_prefix.rstrip("/")) and not rules.has_exceptions:
        return ()
    for path, kind, st, excluded in _walk(top, "", match_prefix, rules, start, cache):
        rows.append((path, kind, st if st is not None else os.lstat(os.path.join(top, path)), excluded))
    if rules.has_exceptions:
        rows = _drop_empty_excluded_dirs(rows)
    return _with_digests(top, rows, cache)


def _drop_empty_excluded_dirs(
    rows: list[tuple[str, str, os.stat_result | None, bool]],
) -> list[tuple[str, str, os.stat_result | None, bool]]:
    needed: set[str] = set()
    for path, _kind, _st, excluded in rows:
        if not excluded:
            parts = path.split("/")
            needed.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return [row for row in rows if not row[3] or row[0] in needed]


def _with_digests(
    top: str, rows: Iterable[tuple[str, str, os.stat_result | None, bool]], cache: StatCache | None
) -> tuple[Entry, ...]:
    entries: list[Entry | None] = []
    todo: list[tuple[int, str, os.stat_result]] = []
    for path, kind, st, _excluded in rows:
        assert st is not None
        mode = stat.S_IMODE(st.st_mode)
        if kind == DIR:
            entries.append(Entry(path, DIR, mode))
        elif kind == LINK:
            entries.append(Entry(path, LINK, mode, os.readlink(os.path.join(top, path))))
        else:
            known = cache.get(_key(st)) if cache is not None else None
            if known is None:
                todo.append((len(entries), path, st))
                entries.append(None)
            else:
                entries.append(Entry(path, FILE, mode, known, st.st_size))
    if todo:
        _hash_missing(top, todo, entries, cache)
    return tuple(e for e in entries if e is not None)


def _hash_missing(
    top: str,
    todo: list[tuple[int, str, os.stat_result]],
    entries: list[Entry | None],
    cache: StatCache | None,
) -> None:
    def one(item: tuple[int, str, os.stat_result]) -> str:
        _index, path, _st = item
        try:
            return hash_file(os.path.join(top, path))
        except PermissionError as exc:
            raise SourceError(f"cannot read {path} below {top}: {exc.strerror}; fix its permissions") from exc

    # hashlib releases the GIL on large buffers, so a second thread overlaps reading and hashing.
    if len(todo) > 8:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            digests = list(pool.map(one, todo, chunksize=64))
    else:
        digests = [one(item) for item in todo]
    now = time.time_ns()
    for (index, path, st), digest in zip(todo, digests, strict=True):
        entries[index] = Entry(path, FILE, stat.S_IMODE(st.st_mode), digest, st.st_size)
        if cache is not None:
            cache.put(_key(st), digest, now)
    if cache is not None:
        cache.save()


def file_entry(path: Path, cache: StatCache | None = None) -> Entry:
    """The Entry of one file (followed if it is a symlink, as COPY of a single file does)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"file {path} does not exist") from exc
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{path} is not a regular file")
    key = _key(st)
    digest = cache.get(key) if cache is not None else None
    if digest is None:
        digest = hash_file(str(path))
        if cache is not None:
            cache.put(key, digest, time.time_ns())
            cache.save()
    return Entry(path.name, FILE, stat.S_IMODE(st.st_mode), digest, st.st_size)
