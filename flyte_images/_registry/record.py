"""What this machine pushed, so an immediate second build skips despite a registry's
read-after-write lag: a "missing" for a reference pushed from here less than RECENT seconds ago
with the same platforms is taken as lag (an "unknown" never). Also the platforms of manifests by
digest. JSON in the cache folder, written atomically under a lock and read as every cache file
is (bounded, never through a symlink).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._files.statcache import cache_dir, open_cache_folder, read_cache_file, write_atomically

RECENT = 300.0
_MAX_ENTRIES = 2000
# The largest files written or read: 2,000 entries of well under 1 KB, and 20,000 digests with
# their platforms.
_MAX_RECORD_BYTES = 8 << 20
_MAX_PLATFORMS_BYTES = 32 << 20


def _path() -> Path:
    return cache_dir() / "pushed.json"


def _time(entry: dict[str, object]) -> float:
    value = entry.get("time")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _load_json(path: Path, limit: int) -> object:
    """The JSON value of a cache file, None when it is missing, too large or not JSON."""
    raw = read_cache_file(path, limit)
    try:
        return None if raw is None else json.loads(raw)
    except ValueError:
        return None


def _write_json(path: Path, value: object, limit: int) -> None:
    """Write `value` as the JSON file `path` (atomically; OSError when it cannot), unless it is
    over `limit`: it would be refused when read."""
    data = json.dumps(value).encode()
    if len(data) > limit:
        return
    dfd = open_cache_folder(path.parent, follow=True)  # the cache folder itself may be a link
    try:
        write_atomically(dfd, path.name, data)
    finally:
        os.close(dfd)


def _entries(path: Path) -> dict[str, dict[str, object]]:
    """The record's entries; a damaged file or entry is dropped, never a crash of the build."""
    data = _load_json(path, _MAX_RECORD_BYTES)
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, dict[str, object]]]:
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a link planted as the lock file is never opened (nor its target created).
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _entries(path)
        yield data
        newest = sorted(data.items(), key=lambda kv: _time(kv[1]), reverse=True)
        _write_json(path, dict(newest[:_MAX_ENTRIES]), _MAX_RECORD_BYTES)
    finally:
        os.close(lock)


def remember_push(reference: str, digest: str | None, platforms: Sequence[str]) -> None:
    with contextlib.suppress(OSError), _locked() as data:
        data[reference] = {"digest": digest, "platforms": sorted(platforms), "time": time.time()}


def recent_push(reference: str, platforms: Sequence[str]) -> dict[str, object] | None:
    """The record of a push of `reference` with these platforms in the last RECENT seconds."""
    entry = _entries(_path()).get(reference)
    if entry is None:
        return None
    recorded = entry.get("platforms")
    fresh = time.time() - _time(entry) < RECENT
    covers = isinstance(recorded, list) and set(platforms) <= {p for p in recorded if isinstance(p, str)}
    return entry if fresh and covers else None


class PlatformCache:
    """Platforms of manifests by digest (never stale: a digest names immutable content); it
    spares the config-blob request of a repeated check.

    The file is a format line, then one JSON line per manifest, `["<digest>",["<platform>",...]]`,
    appended as checks and pushes learn them; a digest's last line is its answer. A lookup reads
    the file and parses only the line it finds, and a save appends its lines, so neither costs
    more as the file grows (a JSON document of every digest would be parsed whole and written
    again on every push). Past _PLATFORMS_COMPACT bytes the file is written again with its
    newest half."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lines: bytes | None = None  # the file's lines, read when first asked
        self._new: dict[str, list[str]] = {}  # learned, not yet saved

    @classmethod
    def default(cls) -> PlatformCache:
        return cls(cache_dir() / "manifest-platforms.json")

    def get(self, digest: str) -> tuple[str, ...] | None:
        if digest in self._new:
            return tuple(self._new[digest])
        if self._lines is None:
            raw = None if self._path is None else read_cache_file(self._path, _MAX_PLATFORMS_BYTES, _PLATFORMS_HEAD)
            # From the format line's newline on: every entry's line starts after a newline.
            self._lines = b"\n" if raw is None else raw[len(_PLATFORMS_HEAD) - 1 :]
        start = self._lines.rfind(b"\n" + _platforms_key(digest))
        end = self._lines.find(b"\n", start + 1) if start >= 0 else -1
        if end < 0:
            return None
        try:
            found = json.loads(self._lines[start + 1 : end])
        except ValueError:
            return None
        if not (isinstance(found, list) and len(found) == 2 and found[0] == digest and isinstance(found[1], list)):
            return None
        if not all(isinstance(p, str) for p in found[1]):
            return None  # a damaged entry is asked for again, never believed
        return tuple(found[1])

    def put(self, digest: str, platforms: Sequence[str]) -> None:
        if self.get(digest) != tuple(platforms):
            self._new[digest] = list(platforms)

    def save(self) -> None:
        if not self._new or self._path is None:
            return
        lines = b"".join(_platforms_line(digest, platforms) for digest, platforms in self._new.items())
        with contextlib.suppress(OSError):
            _append_platforms(self._path, lines)
            self._lines, self._new = None, {}


_PLATFORMS_HEAD = b'["flyte-images manifest platforms",2]\n'
_PLATFORMS_COMPACT = 2 << 20  # about 20,000 manifests


def _platforms_key(digest: str) -> bytes:
    """How the line of `digest` starts (as `_platforms_line` writes it)."""
    return b"[" + json.dumps(digest).encode() + b","


def _platforms_line(digest: str, platforms: Sequence[str]) -> bytes:
    return json.dumps([digest, list(platforms)], separators=(",", ":")).encode() + b"\n"


def _append_platforms(path: Path, lines: bytes) -> None:
    """Append `lines` to the platform cache file; a file of another format (or none) is started
    anew, and one past _PLATFORMS_COMPACT bytes written again with its newest half. OSError
    when it cannot be written."""
    dfd = open_cache_folder(path.parent, follow=True)  # the cache folder itself may be a link
    try:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path.name, flags, 0o600, dir_fd=dfd)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, len(_PLATFORMS_HEAD), 0) != _PLATFORMS_HEAD:
                write_atomically(dfd, path.name, _PLATFORMS_HEAD + lines)
            elif size + len(lines) > _PLATFORMS_COMPACT:
                raw = read_cache_file(path.name, _MAX_PLATFORMS_BYTES, _PLATFORMS_HEAD, dir_fd=dfd) or b""
                body = raw[len(_PLATFORMS_HEAD) :]
                kept = body[-(_PLATFORMS_COMPACT // 2) :]
                if len(kept) < len(body):  # cut inside a line: from the next whole one
                    kept = kept[kept.find(b"\n") + 1 :] if b"\n" in kept else b""
                write_atomically(dfd, path.name, _PLATFORMS_HEAD + kept + lines)
            else:
                # A line cut short (a process killed while appending) is ended first, so it
                # spoils no other line.
                cut = os.pread(fd, 1, size - 1) != b"\n"
                os.write(fd, (b"\n" if cut else b"") + lines)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
