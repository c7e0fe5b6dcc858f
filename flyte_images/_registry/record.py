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
    spares the config-blob request of a repeated check."""

    _MAX = 20_000

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._data: dict[str, list[str]] = {}
        self._dirty = False
        if path is not None:
            loaded = _load_json(path, _MAX_PLATFORMS_BYTES)
            if isinstance(loaded, dict):
                self._data = loaded

    @classmethod
    def default(cls) -> PlatformCache:
        return cls(cache_dir() / "manifest-platforms.json")

    def get(self, digest: str) -> tuple[str, ...] | None:
        found = self._data.get(digest)
        if not isinstance(found, list) or not all(isinstance(p, str) for p in found):
            return None  # a damaged entry is asked for again, never believed
        return tuple(found)

    def put(self, digest: str, platforms: Sequence[str]) -> None:
        if self._data.get(digest) != list(platforms):
            self._data[digest] = list(platforms)
            self._dirty = True

    def save(self) -> None:
        if not self._dirty or self._path is None:
            return
        with contextlib.suppress(OSError):
            _write_json(self._path, dict(list(self._data.items())[-self._MAX :]), _MAX_PLATFORMS_BYTES)
            self._dirty = False
