"""Staging: the snapshot of an image's files that is both hashed and sent to the engine.

Every file an image reads is copied into a staging folder and hashed while it is copied, and
the identifier is made of those digests: the engine receives exactly the bytes the tag
describes, even when a source changes meanwhile; one that vanishes or cannot be read while it
is copied stops the build with an error naming it.

One folder per image description, `staging/<key>/`: `lock` (flock()ed until the build ends:
builds of one image wait for each other), `record` (the folder's disk use, then per staged path:
the source's stat key, the copy's digest and mode), `Dockerfile`, and `context/`. It is updated in
place, so BuildKit sends only what changed; the records' sizes keep the folders under the staging
cap (`inventory.reclaim_staging`). Nothing is removed through a symlink (`remove_at`), and files
are written to a temporary file of a fixed name in the image's folder, then renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import marshal
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from .._config import staging_cap
from .._errors import BuildError, ConfigError, FlyteImagesError, SourceError, SourceNotFoundError
from .inventory import reclaim_staging, staging_lock, staging_use
from .statcache import (
    DIR_NOFOLLOW,
    NEW_FILE,
    READ_FLAGS,
    StatKey,
    _key,
    _racy,
    cache_dir,
    read_cache_file,
    remove_at,
    seal,
    unmarshal,
    unseal,
    well_formed,
    write_atomically,
)

# Times are fixed on every staged path, so COPY layers are the same on every machine.
FIXED_MTIME = 946_684_800  # 2000-01-01T00:00:00Z
FIXED_NS = FIXED_MTIME * 1_000_000_000


def content_mtime_ns(digest: str) -> int:
    """A staged file's modification time: a function of its bytes, so the same content gets
    the same time on every machine (COPY keeps it in the layer), and different content almost
    surely another time. A fixed time for every file would be wrong here: BuildKit sends a file
    of an unchanged context folder again only when its size or time changed, so an edit that
    keeps the size would reach the image as the old bytes."""
    return FIXED_NS + int(digest[:16], 16) % 10**15  # within 11.6 days after 2000-01-01


_CHUNK = 1 << 20
_RECORD_FORMAT = b"flyte-images-staging-2\n"
# Then the folder's disk use in bytes, 16 hex digits and a newline: read alone (`_recorded_size`)
# to keep the folders under the cap; the checksum after it covers the entries.
_SIZE_END = len(_RECORD_FORMAT) + 17
_OLD_FORMAT = b"flyte-images-staging-1\n"  # without the size: still read, so nothing is copied again
_FORMATS = b"flyte-images-staging-"
# The largest record written or read: an entry (path, stat key, digest, mode) is ~200 bytes,
# so this is a context of ~300,000 files; a larger one's record holds only its size (every file
# is copied again each build). A larger file is not one we wrote.
_RECORD_MAX_BYTES = 64 << 20
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
# Temporary files, in the image's folder (one build at a time holds it: fixed names suffice).
_COPYING, _RECORD_TMP, _DOCKERFILE_TMP = ".copying.tmp", ".record.tmp", ".Dockerfile.tmp"

Record = dict[str, tuple[StatKey, str, int]]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def staging_root() -> Path:
    return cache_dir() / "staging"


def _staging(method: Callable[Concatenate[Snapshot, _P], _R]) -> Callable[Concatenate[Snapshot, _P], _R]:
    """A failure to write the staging folder becomes one BuildError naming the cache folder
    (a read-only or full disk, a folder made immutable), never a traceback."""

    @functools.wraps(method)
    def staging(self: Snapshot, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except FlyteImagesError:
            raise
        except OSError as exc:
            raise _staging_error(exc, self.root) from exc

    return staging


@dataclass
class Snapshot:
    """One staging folder, locked, being brought up to date with an image's manifest."""

    root: Path
    record: Record = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    folders: dict[str, int] = field(default_factory=dict)
    # Staged paths that may be symlinks when `finish` runs: only `link` and `put_bytes` can
    # leave one (a copied file and a folder always replace whatever was there).
    maybe_links: set[str] = field(default_factory=set)
    cap: int | None = None  # the staging folders' cap in bytes (None: no cap)

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def dockerfile(self) -> Path:
        return self.root / "Dockerfile"

    @_staging
    def copy_file(self, dfd: int | None, name: str, dest: str, what: str) -> tuple[os.stat_result, str, bool]:
        """Stage the file `name` (relative to `dfd`, or a path) at `dest`: its stat, the digest of
        the bytes written to the staged copy (whatever the source holds later), and whether it
        was read now (False: unchanged since the recorded copy)."""
        self._enter(dest)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=dfd is None)
        except OSError as exc:
            raise _unreadable(exc, what, name) from exc
        known = self.record.get(dest)
        if known is not None and known[0] == _key(st) and known[2] == stat.S_IMODE(st.st_mode):
            with contextlib.suppress(FileNotFoundError):
                staged = os.lstat(self.context / dest)
                if stat.S_ISREG(staged.st_mode) and staged.st_size == st.st_size:
                    return st, known[1], False
        st, digest = self._copy(dfd, name, self.context / dest, what)
        key = _key(st)
        if _racy(key, time.time_ns()):
            self.record.pop(dest, None)  # written moments ago: copy it again next time
        else:
            self.record[dest] = (key, digest, stat.S_IMODE(st.st_mode))
        return st, digest, True

    @_staging
    def share_file(self, path: Path, dest: str) -> None:
        """Stage the tool's own file `path` (a cached uv binary) at `dest` as a hard link, so
        every staging folder shares one copy; its times are the fixed time, as for folders. On
        another file system it is copied."""
        self._enter(dest)
        self.record.pop(dest, None)
        target = self.context / dest
        source = os.stat(path)
        with contextlib.suppress(FileNotFoundError):
            staged = os.lstat(target)
            if (staged.st_ino, staged.st_dev) == (source.st_ino, source.st_dev):
                return
        tmp = self.root / _COPYING
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(path, tmp, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            self._copy(None, str(path), target, "uv binary")
            return
        os.utime(tmp, ns=(FIXED_NS, FIXED_NS), follow_symlinks=False)
        with contextlib.suppress(FileNotFoundError):
            if target.is_dir() and not target.is_symlink():
                _remove(target)
        os.replace(tmp, target)

    @_staging
    def put_bytes(self, dest: str, data: bytes, mode: int, digest: str) -> None:
        """Stage `data` (already read and hashed by the caller) at `dest`."""
        self._enter(dest)
        self.maybe_links.add(dest)
        target = self.context / dest
        known = self.record.get(dest)
        if known is not None and known[1] == digest and known[2] == mode and target.is_file():
            return
        tmp = self.root / _COPYING
        _write_new(tmp, (data,), mode)
        os.utime(tmp, ns=(FIXED_NS, content_mtime_ns(digest)))
        with contextlib.suppress(FileNotFoundError):
            if target.is_dir() and not target.is_symlink():
                _remove(target)
        os.replace(tmp, target)
        self.record[dest] = ((0, 0, 0, 0, 0), digest, mode)

    @_staging
    def link(self, dest: str, target_text: str) -> None:
        self._enter(dest)
        self.maybe_links.add(dest)
        path = self.context / dest
        with contextlib.suppress(FileNotFoundError):
            if path.is_symlink() and os.readlink(path) == target_text:
                return
            _remove(path)
        os.symlink(target_text, path)

    @_staging
    def folder(self, dest: str, mode: int) -> None:
        self._enter(dest)
        path = self.context / dest
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            _remove(path)
        path.mkdir(exist_ok=True)
        os.chmod(path, mode | stat.S_IRWXU)  # writable while staging; `finish` sets the real mode
        self.folders[dest] = mode

    def unstage(self, dest: str) -> None:
        """Forget the folder `dest`: the walk kept it for nothing (see `_files.tree`)."""
        self.seen.discard(dest)
        self.folders.pop(dest, None)

    def _enter(self, dest: str) -> None:
        """`dest` is kept by `finish`, and its parent folders are staged."""
        self.seen.add(dest)
        chain = dest.split("/")[:-1]
        for depth in range(1, len(chain) + 1):
            sub = "/".join(chain[:depth])
            if sub not in self.folders:
                self.folder(sub, 0o755)

    def _copy(self, dfd: int | None, name: str, target: Path, what: str) -> tuple[os.stat_result, str]:
        try:
            src = os.open(name, READ_FLAGS if dfd is not None else READ_FLAGS & ~os.O_NOFOLLOW, dir_fd=dfd)
        except OSError as exc:
            raise _unreadable(exc, what, name) from exc
        hasher = hashlib.sha256()
        tmp = self.root / _COPYING
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(f"{what} {name} is not a regular file")
            with contextlib.suppress(FileNotFoundError):
                _remove(target)
            _write_new(tmp, _chunks(src, hasher), stat.S_IMODE(st.st_mode))
        finally:
            os.close(src)
        digest = hasher.hexdigest()
        os.utime(tmp, ns=(FIXED_NS, content_mtime_ns(digest)))
        os.replace(tmp, target)
        return st, digest

    @_staging
    def write_dockerfile(self, text: str) -> None:
        tmp = self.root / _DOCKERFILE_TMP
        _write_new(tmp, (text.encode("utf-8"),))
        tmp.replace(self.dockerfile)

    @_staging
    def finish(self) -> None:
        """Remove what the manifest no longer has; set folder modes and the fixed times."""
        stack = [(self.context, "")]
        while stack:
            path, prefix = stack.pop()
            for item in os.scandir(path):
                dest = f"{prefix}{item.name}"
                if dest not in self.seen:
                    _remove(Path(item.path))
                    self.record.pop(dest, None)
                elif item.is_dir(follow_symlinks=False):
                    stack.append((Path(item.path), dest + "/"))
        for dest in sorted(self.folders, key=lambda d: d.count("/"), reverse=True):
            os.chmod(self.context / dest, self.folders[dest])
            os.utime(self.context / dest, (FIXED_MTIME, FIXED_MTIME))
        for dest in self.maybe_links:
            path = self.context / dest
            if path.is_symlink():
                with contextlib.suppress(FileNotFoundError, NotImplementedError):
                    os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
        os.utime(self.context, (FIXED_MTIME, FIXED_MTIME))
        payload = marshal.dumps(self.record)
        if _SIZE_END + 32 + len(payload) > _RECORD_MAX_BYTES:
            payload = marshal.dumps({})  # it would be refused when read back: only the size is kept
        old = 0
        with contextlib.suppress(OSError):
            old = os.lstat(self.root / "record").st_blocks * 512
        size = staging_use(self.root) - old + -(-(_SIZE_END + 32 + len(payload)) // 4096) * 4096
        tmp = self.root / _RECORD_TMP
        try:
            _write_new(tmp, (seal(_size_head(size), payload),))
            tmp.replace(self.root / "record")
        except OSError:
            tmp.unlink(missing_ok=True)  # the record only saves work next time: a build goes on
        reclaim_staging(self.root.parent, self.root.name, size, self.cap, _size_of)

    def _load_record(self) -> None:
        """The record of the last build, when it is exactly what `finish` wrote (bounded,
        checksummed, every entry of the right shape); otherwise none: every file is copied."""
        raw = read_cache_file(self.root / "record", _RECORD_MAX_BYTES, _FORMATS) or b""
        head = raw[:_SIZE_END] if raw.startswith(_RECORD_FORMAT) else _OLD_FORMAT
        loaded = unmarshal(unseal(raw, head))
        if _record_well_formed(loaded):
            self.record = loaded


def _size_head(size: int) -> bytes:
    return _RECORD_FORMAT + b"%016x\n" % size


def _recorded_size(parent: int, name: str) -> int | None:
    """The disk use the record of the folder `name` gives, or None (no record, another format)."""
    try:
        fd = os.open(f"{name}/record", READ_FLAGS, dir_fd=parent)
    except OSError:
        return None
    try:
        head = os.pread(fd, _SIZE_END, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return None
    finally:
        os.close(fd)
    digits = head[len(_RECORD_FORMAT) : -1]
    if not head.startswith(_RECORD_FORMAT) or len(head) != _SIZE_END or digits.strip(b"0123456789abcdef"):
        return None
    return int(digits, 16)


def _record_well_formed(loaded: Any) -> bool:
    """True for {staged path: (stat key, 64 lowercase hex digits, mode)}: a recorded digest
    goes into the identifier when the source is unchanged, so nothing else is ever believed."""
    if type(loaded) is not dict:
        return False
    entries = list(loaded.values())
    return (
        all(type(dest) is str for dest in loaded)
        and all(type(e) is tuple and len(e) == 3 and type(e[2]) is int for e in entries)
        and well_formed([e[0] for e in entries], [e[1] for e in entries])
    )


def _chunks(src: int, hasher: hashlib._Hash) -> Iterator[bytes]:
    while chunk := os.read(src, _CHUNK):
        hasher.update(chunk)
        yield chunk


def _write_new(path: Path, chunks: Iterable[bytes], mode: int = 0o600) -> None:
    """Write a new file `path` of mode `mode`: whatever is there (a file left by a killed build,
    a symlink) is removed first, never followed; on failure nothing is left."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, NEW_FILE, 0o600)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:  # a write may take only part of the chunk
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _unreadable(exc: OSError, what: str, name: str) -> SourceError:
    if isinstance(exc, FileNotFoundError):
        return SourceNotFoundError(f"{what} {name} disappeared while it was staged; run again")
    if isinstance(exc, PermissionError):
        return SourceError(f"cannot read {what} {name}: permission denied; fix its permissions")
    return SourceError(
        f"cannot read {what} {name} ({exc.strerror}); it may have changed while it was staged: run again"
    )


def _staging_error(exc: OSError, root: Path) -> BuildError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BuildError(
            f"no space left to stage the build context in {root} ({exc.strerror}); free disk space, or "
            "point FLYTE_IMAGES_CACHE_DIR at a folder on a bigger disk"
        )
    where = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror or str(exc)
    return BuildError(
        f"cannot write the build context in the cache folder {cache_dir()} ({where}); make it writable, "
        "or point FLYTE_IMAGES_CACHE_DIR at a folder you can write"
    )


def _remove(path: Path) -> None:
    """Remove `path`: a file or a symlink itself, a folder with everything below it (see
    `remove_at`). Its parents are real folders: in the locked staging folder, `folder` makes
    every parent one before anything is put below it."""
    parent = os.open(path.parent, DIR_NOFOLLOW)
    try:
        remove_at(parent, path.name)
    finally:
        os.close(parent)


def _own_folder(path: Path) -> None:
    """Make the folder `path` (0700) unless it is there; ConfigError when a symlink or anything
    but a folder is there: the tool makes these folders itself and never writes through a link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise ConfigError(
            f"{path} is {what}, where flyte-images keeps a folder of its own (it never writes or "
            "cleans up through a link); remove it, or point FLYTE_IMAGES_CACHE_DIR at another folder"
        )


@contextlib.contextmanager
def snapshot(key: str) -> Iterator[Snapshot]:
    """The locked staging folder for `key`, ready to be updated; unlocked when the block ends."""
    root = staging_root() / key
    cap = staging_cap()  # a bad setting stops the build before anything is staged
    lock = _lock(root)
    try:
        try:
            os.utime(root)  # its last use, for `reclaim_staging`
            for leftover in (_COPYING, _RECORD_TMP, _DOCKERFILE_TMP):  # from a build that was killed
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(root / leftover)
            snap = Snapshot(root, cap=cap)
            snap._load_record()
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.lstat(snap.context).st_mode):
                    os.unlink(snap.context)  # a file or a link where the context folder belongs
            with contextlib.suppress(FileExistsError):
                os.mkdir(snap.context, 0o755)
            os.chmod(snap.context, 0o755)
        except OSError as exc:
            raise _staging_error(exc, root) from exc
        yield snap
    finally:
        os.close(lock)


def _lock(root: Path) -> int:
    """The lock of the folder `root` (made when missing), held. Another build's clean-up may
    remove the folder while this one waits for it: then the folder is made again."""
    for _attempt in range(10):
        try:
            root.parent.parent.mkdir(0o700, parents=True, exist_ok=True)
            _own_folder(root.parent)
            _own_folder(root)
            lock = os.open(root / "lock", _LOCK_FLAGS, 0o600)
        except FileNotFoundError:
            continue  # removed between the two steps
        except OSError as exc:
            raise _staging_error(exc, root) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(lock), os.lstat(root / "lock")):
                    return lock
        except BaseException:
            os.close(lock)
            raise
        os.close(lock)
    raise BuildError(f"the staging folder {root} was removed again and again while this build waited for it; run again")


def _size_of(parent: int, name: str, st: os.stat_result) -> int | None:
    size = _recorded_size(parent, name)
    return _measured(parent, name, st) if size is None else size


def _measured(parent: int, name: str, st: os.stat_result) -> int | None:
    """The disk use of the folder `name` whose record gives none (an older format, or a build
    killed before its first record), walked once: its record is written again with it (entries
    kept) under its lock, and its times are kept, so its place in the order of use stays. None
    when a build holds it: that build records the size."""
    with staging_lock(parent, name) as held:
        if not held:
            return None
        folder = os.open(name, DIR_NOFOLLOW, dir_fd=parent)
        try:
            raw = read_cache_file("record", _RECORD_MAX_BYTES, _FORMATS, dir_fd=folder) or b""
            sealed = raw[len(_OLD_FORMAT) :] if raw.startswith(_OLD_FORMAT) else seal(b"", marshal.dumps({}))
            size = staging_use(name, parent)
            with contextlib.suppress(OSError):  # then it is walked again next time
                write_atomically(folder, "record", _size_head(size) + sealed)
                os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(folder)
        return size
