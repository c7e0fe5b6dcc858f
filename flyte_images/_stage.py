"""Staging: the snapshot of an image's files that is both hashed and sent to the engine.

A build copies every file an image reads into a staging folder and hashes the bytes while it
copies them; the identifier is computed from those digests. What the engine receives is
therefore exactly what the tag describes, even when an editor (or a test run writing
`__pycache__`) changes a source file during the build: the build then succeeds, tagged for the
bytes it holds. A file that vanishes or cannot be read while it is copied stops the build with
an error naming it.

Each image description (its layers, paths and the working folder) has one stable staging
folder under the cache folder, `staging/<key>/`:

    lock            flock()ed from the snapshot to the end of the build; builds of the same
                    image wait for each other, other images build in parallel
    record          per staged path: the source's stat key, the digest and mode of the copy
    Dockerfile      the rendered Dockerfile (outside the context: it is not sent as a file)
    context/        exactly the manifest: `_fi/<layer>/...` and the uv binaries

It is updated in place: a file whose source has the same stat key as when it was copied is
not read again (its recorded digest describes the copy, which is what is sent), changed files
are copied afresh, and paths no longer in the manifest are removed. Because the folder is the
same between edits, BuildKit sends only what changed. Times are fixed (2000-01-01) on every
staged path, so COPY layers are the same on every machine. A staging folder unused for
`_MAX_AGE_S` is removed by a later build; one left by a killed process is simply reused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import marshal
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import BuildError, SourceError, SourceNotFoundError
from ._statcache import StatKey, _key, _racy, cache_dir

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
_RECORD_FORMAT = b"flyte-images-staging-1\n"
_MAX_AGE_S = 14 * 24 * 3600
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

Record = dict[str, tuple[StatKey, str, int]]


def staging_root() -> Path:
    return cache_dir() / "staging"


@dataclass
class Snapshot:
    """One staging folder, locked, being brought up to date with an image's manifest."""

    root: Path
    record: Record = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    folders: dict[str, int] = field(default_factory=dict)
    copied: int = 0  # files read and copied by this snapshot (the others were unchanged)
    # Staged paths that may be symlinks when `finish` runs: only `link` and `put_bytes` can
    # leave one (a copied file and a folder always replace whatever was there).
    maybe_links: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._context = str(self.root / "context")

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def dockerfile(self) -> Path:
        return self.root / "Dockerfile"

    # ----- what the walk calls ---------------------------------------------------------------

    def copy_file(self, dfd: int | None, name: str, dest: str, what: str) -> tuple[os.stat_result, str]:
        """Stage the file `name` (relative to `dfd`, or a path) at `dest`; (its stat, digest).

        The digest is of the bytes written to the staged copy, whatever the source holds later.
        """
        self._parents(dest)
        self.seen.add(dest)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=dfd is None)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{what} {name} disappeared while it was staged; run again") from exc
        known = self.record.get(dest)
        if known is not None and known[0] == _key(st) and known[2] == stat.S_IMODE(st.st_mode):
            with contextlib.suppress(FileNotFoundError):
                staged = os.lstat(f"{self._context}/{dest}")
                if stat.S_ISREG(staged.st_mode) and staged.st_size == st.st_size:
                    return st, known[1]
        st, digest = self._copy(dfd, name, self.context / dest, what)
        key = _key(st)
        if _racy(key, time.time_ns()):
            self.record.pop(dest, None)  # written moments ago: copy it again next time
        else:
            self.record[dest] = (key, digest, stat.S_IMODE(st.st_mode))
        self.copied += 1
        return st, digest

    def put_bytes(self, dest: str, data: bytes, mode: int, digest: str) -> None:
        """Stage `data` (already read and hashed by the caller) at `dest`."""
        self._parents(dest)
        self.seen.add(dest)
        self.maybe_links.add(dest)
        target = self.context / dest
        known = self.record.get(dest)
        if known is not None and known[1] == digest and known[2] == mode and target.is_file():
            return
        tmp = target.with_name(f".{target.name}.staging")
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _staging_error(exc, self.root) from exc
        os.chmod(tmp, mode)
        os.utime(tmp, ns=(FIXED_NS, content_mtime_ns(digest)))
        with contextlib.suppress(FileNotFoundError):
            if target.is_dir() and not target.is_symlink():
                _remove(target)
        os.replace(tmp, target)
        self.record[dest] = ((0, 0, 0, 0, 0), digest, mode)
        self.copied += 1

    def link(self, dest: str, target_text: str) -> None:
        self._parents(dest)
        self.seen.add(dest)
        self.maybe_links.add(dest)
        path = self.context / dest
        with contextlib.suppress(FileNotFoundError):
            if path.is_symlink() and os.readlink(path) == target_text:
                return
            _remove(path)
        os.symlink(target_text, path)

    def folder(self, dest: str, mode: int) -> None:
        self._parents(dest)
        self.seen.add(dest)
        path = self.context / dest
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            _remove(path)
        path.mkdir(exist_ok=True)
        os.chmod(path, mode | stat.S_IRWXU)  # writable while staging; `finish` sets the real mode
        self.folders[dest] = mode

    # ----- helpers ---------------------------------------------------------------------------

    def _parents(self, dest: str) -> None:
        parent = dest.rpartition("/")[0]
        if parent and parent not in self.folders:
            chain = parent.split("/")
            for depth in range(1, len(chain) + 1):
                sub = "/".join(chain[:depth])
                if sub not in self.folders:
                    self.folder(sub, 0o755)

    def _copy(self, dfd: int | None, name: str, target: Path, what: str) -> tuple[os.stat_result, str]:
        try:
            src = os.open(name, _OPEN_FLAGS if dfd is not None else os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{what} {name} disappeared while it was staged; run again") from exc
        except PermissionError as exc:
            raise SourceError(f"cannot read {what} {name}: permission denied; fix its permissions") from exc
        except OSError as exc:
            raise SourceError(f"cannot read {what} {name} ({exc.strerror}); it changed while it was staged") from exc
        hasher = hashlib.sha256()
        tmp = target.with_name(f".{target.name}.staging")
        with contextlib.suppress(FileNotFoundError):
            _remove(target)
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(f"{what} {name} is not a regular file")
            try:
                _write_hashed(src, tmp, hasher, stat.S_IMODE(st.st_mode))
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise _staging_error(exc, self.root) from exc
        finally:
            os.close(src)
        digest = hasher.hexdigest()
        os.utime(tmp, ns=(FIXED_NS, content_mtime_ns(digest)))
        os.replace(tmp, target)
        return st, digest

    def write_dockerfile(self, text: str) -> None:
        tmp = self.root / ".Dockerfile.tmp"
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _staging_error(exc, self.root) from exc
        tmp.replace(self.dockerfile)

    def finish(self) -> None:
        """Remove what the manifest no longer has; set folder modes and the fixed times."""
        self._prune(self.context, "")
        for dest in sorted(self.folders, key=lambda d: d.count("/"), reverse=True):
            path = self.context / dest
            os.chmod(path, self.folders[dest])
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        for dest in self.maybe_links:
            path = self.context / dest
            if path.is_symlink():
                with contextlib.suppress(FileNotFoundError, NotImplementedError):
                    os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
        os.utime(self.context, (FIXED_MTIME, FIXED_MTIME))
        self._save_record()

    def _prune(self, folder: Path, rel: str) -> None:
        stack = [(folder, rel)]
        while stack:
            path, prefix = stack.pop()
            for item in os.scandir(path):
                dest = f"{prefix}{item.name}"
                if dest not in self.seen:
                    _remove(Path(item.path))
                    self.record.pop(dest, None)
                elif item.is_dir(follow_symlinks=False):
                    stack.append((Path(item.path), dest + "/"))

    def _load_record(self) -> None:
        with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
            raw = (self.root / "record").read_bytes()
            head = len(_RECORD_FORMAT)
            if raw.startswith(_RECORD_FORMAT) and raw[head : head + 32] == hashlib.sha256(raw[head + 32 :]).digest():
                loaded = marshal.loads(raw[head + 32 :])
                if isinstance(loaded, dict):
                    self.record = loaded

    def _save_record(self) -> None:
        payload = marshal.dumps(self.record)
        tmp = self.root / ".record.tmp"
        try:
            tmp.write_bytes(_RECORD_FORMAT + hashlib.sha256(payload).digest() + payload)
        except OSError:
            tmp.unlink(missing_ok=True)  # the record only saves work next time: a build goes on
            return
        tmp.replace(self.root / "record")


def _write_hashed(src: int, tmp: Path, hasher: hashlib._Hash, mode: int) -> None:
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while chunk := os.read(src, _CHUNK):
            hasher.update(chunk)
            view = memoryview(chunk)
            while view:  # a write may take only part of the chunk
                view = view[os.write(out, view) :]
        os.fchmod(out, mode)
    finally:
        os.close(out)


def _staging_error(exc: OSError, root: Path) -> BuildError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BuildError(
            f"no space left to stage the build context in {root} ({exc.strerror}); free disk space, or "
            "point FLYTE_IMAGES_CACHE_DIR at a folder on a bigger disk"
        )
    return BuildError(f"cannot write the build context in {root}: {exc.strerror}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for sub, dirs, _files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(sub, d), 0o700)
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def snapshot(key: str) -> Iterator[Snapshot]:
    """The locked staging folder for `key`, ready to be updated; unlocked when the block ends."""
    root = staging_root() / key
    root.mkdir(parents=True, exist_ok=True)
    _reclaim_old(staging_root(), keep=key)
    with open(root / "lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(root)  # marks the folder as in use for `_reclaim_old`
        snap = Snapshot(root)
        snap._load_record()
        if snap.context.exists():
            os.chmod(snap.context, 0o755)
        snap.context.mkdir(exist_ok=True)
        yield snap


def _reclaim_old(parent: Path, keep: str) -> None:
    """Remove staging folders nobody used for two weeks (skipping any that is locked)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for item in os.scandir(parent):
            if item.name == keep or not item.is_dir(follow_symlinks=False):
                continue
            if now - item.stat(follow_symlinks=False).st_mtime < _MAX_AGE_S:
                continue
            with contextlib.suppress(OSError), open(Path(item.path) / "lock", "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _remove(Path(item.path))
