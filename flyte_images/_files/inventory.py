"""What the tool keeps on this machine, and removing it: `flyte-images cache` and `cache prune`,
and the staging folders' clean-up after each build (`reclaim_staging`: age and size cap).

Everything lives in the cache folder (`statcache.cache_dir`), plus the buildx builders the
buildkit backend creates (`flyte-images-<12 hex digits>`, remote driver). Only the names the tool
writes are listed or removed, never a symlink, and folders are entered only through descriptors
opened with O_NOFOLLOW (`remove_at`). Sizes are disk use (a hard-linked file counts once);
"last used" is the newest of a folder's modification time and its files' access and modification
times (folders' access times change when they are listed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .statcache import DIR_NOFOLLOW, cache_dir, is_temporary_name, read_cache_file, remove_at

DAY = 86400.0
STAGING_MAX_AGE_S = 14 * DAY  # a staging folder unused this long is removed by a later build
# A temporary file is a writer's until it renames it: one younger than this is never removed.
_TEMPORARY_GRACE_S = 3600.0
_BUILDER = re.compile(r"flyte-images-[0-9a-f]{12}")


_STAGING_KEY = r"[0-9a-f]{16,64}"


@dataclass(frozen=True)
class Kind:
    """One kind of thing kept: where (`folder` below the cache folder, or the cache folder
    itself), which names are its own (`owns`, a regular expression), and whether each is a folder."""

    key: str
    label: str
    folder: str | None
    owns: str
    folders: bool = False


KINDS = (
    # uv/<version>/<arch>/uv (`uvbin`)
    Kind("uv", "uv binaries", "uv", r"[0-9]+(?:\.[0-9]+)*[a-z0-9.+-]*", folders=True),
    # staging/<description key>/ (`_plan.description_key`: 24 hex digits; 16 to 64 are taken)
    Kind("staging", "staging folders", "staging", _STAGING_KEY, folders=True),
    Kind("stat-cache", "stat cache", None, r"stat-cache-v2\.bin"),
    Kind("tree-memos", "tree memos", "tree-memo-v1", r"[0-9a-f]{32}\.bin"),
    # records/<description key>.jsonl (`_plan.explain`; .json: an earlier format, still pruned)
    Kind("records", "build records (explain)", "records", r"[0-9a-f]{16,64}\.jsonl?"),
    Kind("pushes", "push records", None, r"pushed\.json|manifest-platforms\.json"),
    Kind("documents", "registry documents", "documents", r"sha256-[0-9a-f]{64}|sha512-[0-9a-f]{128}"),
    Kind("basefs", "base image file answers", "basefs", r"[0-9a-f]{64}\.json"),
)
BUILDERS = "builders"
LABELS = {**{k.key: k.label for k in KINDS}, BUILDERS: "buildx builders"}


@dataclass(frozen=True)
class Item:
    kind: str
    name: str  # relative to the cache folder; a builder's name for a builder
    size: int
    used: float  # last use, seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "bytes": self.size, "last_used": round(self.used, 3)}


@dataclass
class Inventory:
    cache_dir: Path
    buildx_dir: Path
    items: list[Item] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        """Per kind, in listing order: count and bytes (kinds with nothing included)."""
        rows = []
        for key, label in LABELS.items():
            mine = [i for i in self.items if i.kind == key]
            rows.append({"kind": key, "label": label, "count": len(mine), "bytes": sum(i.size for i in mine)})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "cache_dir": str(self.cache_dir),
            "buildx_dir": str(self.buildx_dir),
            "kinds": self.summary(),
            "total": {"count": len(self.items), "bytes": sum(i.size for i in self.items)},
            "items": [i.to_json() for i in self.items],
        }


@dataclass
class Pruned:
    removed: list[Item] = field(default_factory=list)
    failed: list[tuple[Item, str]] = field(default_factory=list)  # (item, why it stayed)

    def to_json(self) -> dict[str, Any]:
        return {
            "removed": [i.to_json() for i in self.removed],
            "freed_bytes": sum(i.size for i in self.removed),
            "kept": [{**i.to_json(), "reason": why} for i, why in self.failed],
        }


def buildx_dir() -> Path:
    """buildx's config folder, where it keeps its builders (`BUILDX_CONFIG`, else
    `$DOCKER_CONFIG/buildx`, else `~/.docker/buildx`), as buildx finds it."""
    explicit = os.environ.get("BUILDX_CONFIG")
    return Path(explicit) if explicit else Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "buildx"


def inventory() -> Inventory:
    """Everything the tool keeps, item by item (ConfigError for a cache folder others can write)."""
    root = cache_dir()
    found = Inventory(root, buildx_dir())
    seen: set[tuple[int, int]] = set()  # inodes counted already: a hard link counts once
    with _opened(root, follow=True) as top:
        if top is not None:
            for kind in KINDS:
                found.items += _items(top, kind, seen)
    found.items += _builders(found.buildx_dir)
    return found


@contextlib.contextmanager
def _opened(path: Path | str, *, dir_fd: int | None = None, follow: bool = False) -> Iterator[int | None]:
    """A descriptor of the folder, or None when it is missing, not a folder or (unless `follow`:
    only the cache folder itself may be a link) a symlink."""
    try:
        fd = os.open(path, DIR_NOFOLLOW & ~os.O_NOFOLLOW if follow else DIR_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _written(name: str) -> str | None:
    """The name a temporary file `.NAME.<16 hex>.tmp` is written for, or None."""
    written = name[1:].rpartition(".")[0].rpartition(".")[0]
    return written if written and is_temporary_name(name, written) else None


def _items(top: int, kind: Kind, seen: set[tuple[int, int]]) -> list[Item]:
    items = []
    with _opened(kind.folder or ".", dir_fd=top) as fd:
        if fd is None:
            return []
        prefix = f"{kind.folder}/" if kind.folder else ""
        with os.scandir(fd) as entries:
            names = sorted(e.name for e in entries)
        for name in names:
            written = _written(name)
            mine = written if written and not kind.folders else name  # a leftover: whose it is
            if not (re.fullmatch(kind.owns, name) or re.fullmatch(kind.owns, mine)):
                continue
            with contextlib.suppress(OSError):  # gone meanwhile, or unreadable: not listed
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if kind.folders and stat.S_ISDIR(st.st_mode):
                    size, used = _folder_use(fd, name, st, seen)
                elif not kind.folders and stat.S_ISREG(st.st_mode):
                    size, used = _file_use(st, seen), max(st.st_atime, st.st_mtime)
                    if written is not None:
                        used = min(used, st.st_mtime)  # a leftover: its age is when it was written
                else:
                    continue  # a symlink or anything else under our name is not ours
                items.append(Item(kind.key, prefix + name, size, used))
    return items


def _file_use(st: os.stat_result, seen: set[tuple[int, int]]) -> int:
    identity = (st.st_dev, st.st_ino)
    if identity in seen:
        return 0
    seen.add(identity)
    return st.st_blocks * 512


def _folder_use(parent: int, name: str, st: os.stat_result, seen: set[tuple[int, int]]) -> tuple[int, float]:
    """(disk use, last use) of the folder `name` and everything below it, links not followed."""
    size, used = _file_use(st, seen), st.st_mtime
    for _path, _dirs, files, fd in os.fwalk(name, dir_fd=parent, follow_symlinks=False):
        size += _file_use(os.fstat(fd), seen)
        for file in files:
            with contextlib.suppress(OSError):
                inner = os.stat(file, dir_fd=fd, follow_symlinks=False)
                size += _file_use(inner, seen)
                if stat.S_ISREG(inner.st_mode):
                    used = max(used, inner.st_atime, inner.st_mtime)
    return size, used


def _builders(folder: Path) -> list[Item]:
    """The buildx builders the buildkit backend made: our name and the remote driver."""
    items = []
    with _opened(folder / "instances") as fd:
        if fd is None:
            return []
        with os.scandir(fd) as entries:
            names = sorted(e.name for e in entries if _BUILDER.fullmatch(e.name))
        for name in names:
            with contextlib.suppress(OSError, ValueError):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                data = json.loads(read_cache_file(name, 1 << 20, dir_fd=fd) or b"null")
                if not isinstance(data, dict) or data.get("Driver") != "remote":
                    continue  # someone else's builder that happens to share the name
                size, used = st.st_blocks * 512, st.st_mtime
                with contextlib.suppress(OSError):  # buildx writes it whenever the builder is used
                    activity = os.stat(folder / "activity" / name, follow_symlinks=False)
                    size, used = size + activity.st_blocks * 512, max(used, activity.st_mtime)
                items.append(Item(BUILDERS, name, size, used))
    return items


def prune(older_than_days: float | None = None, *, dry_run: bool = False) -> Pruned:
    """Remove what the tool keeps: everything, or what was not used for `older_than_days`. A
    staging folder a build holds is kept; a temporary file is kept until it is an hour old."""
    listed = inventory()
    now = time.time()
    result = Pruned()
    for item in listed.items:
        age = now - item.used
        if older_than_days is not None and age < older_than_days * DAY:
            continue
        if _written(item.name.rpartition("/")[2]) is not None and age < _TEMPORARY_GRACE_S:
            continue
        if dry_run:
            result.removed.append(item)
            continue
        try:
            if item.kind == BUILDERS:
                _remove_builder(item.name)
            else:
                _remove_item(listed.cache_dir, item)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue  # removed meanwhile: nothing was freed here
            result.failed.append((item, exc.strerror or str(exc)))
        else:
            result.removed.append(item)
    return result


def _remove_item(root: Path, item: Item) -> None:
    folder, _, name = item.name.rpartition("/")
    kind = next(k for k in KINDS if k.key == item.kind)
    with _opened(root, follow=True) as top, _opened(folder or ".", dir_fd=top) as parent:
        if parent is None:
            raise OSError(errno.ENOENT, "gone")
        if not kind.folders:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):  # replaced by a link since it was listed: left alone
                os.unlink(name, dir_fd=parent)
            return
        if item.kind == "staging":
            _remove_staging(parent, name)
        else:
            remove_at(parent, name)


def _remove_staging(parent: int, name: str) -> None:
    """Remove one staging folder unless a build holds its lock (then EBUSY)."""
    with staging_lock(parent, name) as held:
        if not held:
            raise OSError(errno.EBUSY, "a build is using it")
        remove_at(parent, name)


@contextlib.contextmanager
def staging_lock(parent: int, name: str) -> Iterator[bool]:
    """The lock of the staging folder `name` in the folder `parent`, taken without waiting:
    True while it is held, False when a build holds it. The folder is opened with O_NOFOLLOW."""
    folder = os.open(name, DIR_NOFOLLOW, dir_fd=parent)
    try:
        lock = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(lock)


def reclaim_staging(
    parent: Path, keep: str, kept: int, cap: int | None, size_of: Callable[[int, str, os.stat_result], int | None]
) -> None:
    """Remove the staging folders in `parent` nobody used for two weeks; then, while the folders'
    sizes (`kept`: that of `keep`, the folder in use) add up to more than `cap`, the least
    recently used first. A folder's last use is its modification time (a build touches it), its
    size what `size_of` answers (the folder's record: no folder is walked). A folder a build
    holds is kept. Only folders named as a build names them, never through a symlink: `parent`
    is opened with O_NOFOLLOW, and everything in it relative to that descriptor."""
    now = time.time()
    with contextlib.suppress(OSError):
        pfd = os.open(parent, DIR_NOFOLLOW)
        try:
            found = []
            with os.scandir(pfd) as items:
                for item in items:
                    name = item.name
                    if re.fullmatch(_STAGING_KEY, name) and name != keep and item.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):  # removed meanwhile
                            found.append((item.stat(follow_symlinks=False), name))
            total, sized = kept, []
            for st, name in sorted(found, key=lambda f: f[0].st_mtime):
                if now - st.st_mtime >= STAGING_MAX_AGE_S:
                    with contextlib.suppress(OSError):  # held by a build (EBUSY), or gone
                        _remove_staging(pfd, name)
                elif cap is not None:
                    size = 0  # unknown (a build holds it, and records its size; or it is gone)
                    with contextlib.suppress(OSError):
                        size = size_of(pfd, name, st) or 0
                    total += size
                    sized.append((name, size))
            for name, size in sized:
                if cap is None or total <= cap:
                    break
                with contextlib.suppress(OSError):
                    _remove_staging(pfd, name)
                    total -= size
        finally:
            os.close(pfd)


def staging_use(name: str | Path, dir_fd: int | None = None) -> int:
    """The disk use of the staging folder `name`, links not followed, without hard-linked files
    (the uv binary: its space is the cache's uv folder's, however many contexts share it)."""
    size = 0
    for _path, _dirs, files, fd in os.fwalk(name, dir_fd=dir_fd, follow_symlinks=False):
        size += os.fstat(fd).st_blocks * 512
        for file in files:
            with contextlib.suppress(OSError):  # gone meanwhile: nothing of it is kept
                st = os.stat(file, dir_fd=fd, follow_symlinks=False)
                size += st.st_blocks * 512 if st.st_nlink == 1 else 0
    return size


def _remove_builder(name: str) -> None:
    """`docker buildx rm NAME`: buildx owns its store (its lock, refs and activity files)."""
    docker = shutil.which("docker")
    if docker is None:
        raise OSError(errno.ENOEXEC, "the docker command is not installed")
    done = subprocess.run(
        [docker, "buildx", "rm", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise OSError(errno.EIO, f"docker buildx rm failed: {said[-1][:200] if said else done.returncode}")
