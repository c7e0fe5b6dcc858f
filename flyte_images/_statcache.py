"""The stat cache: a file's SHA-256 remembered under its stat key, so an unchanged file is not read.

Keyed on (device, inode, size, mtime_ns, ctime_ns). It lives in memory and in one file under the
user cache folder; it is off when `CI` is set (fresh checkouts gain nothing from it) and when
`FLYTE_IMAGES_STAT_CACHE=0`; `FLYTE_IMAGES_STAT_CACHE=1` forces it on. Nothing whose times are
within two seconds of the moment it was read is remembered: a file written again within the
same timestamp tick could otherwise keep a stale digest.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._files import _TreeMemo
    from ._ignore import IgnoreRules

_RACY_NS = 2_000_000_000
_CACHE_FORMAT = b"flyte-images-stat-cache-1\n"
_CACHE_MAX_ENTRIES = 1_000_000

StatKey = tuple[int, int, int, int, int]


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
        self.trees: dict[tuple[str, str, IgnoreRules], _TreeMemo] = {}

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
        if _racy(key, now_ns):
            return
        with self._lock:
            digests = self._load()
            if len(digests) >= _CACHE_MAX_ENTRIES:
                digests.clear()
            digests[key] = digest
            self._dirty = True

    def save(self) -> None:
        """Write the cache file if anything was added; failing to write is not an error."""
        if not self._dirty or self._path is None or self._digests is None:
            return
        with contextlib.suppress(OSError):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stat-cache-", dir=self._path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(_CACHE_FORMAT + marshal.dumps(self._digests))
                Path(tmp).replace(self._path)
                self._dirty = False
            finally:
                Path(tmp).unlink(missing_ok=True)


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


def _racy(key: StatKey, now_ns: int) -> bool:
    return now_ns - key[3] < _RACY_NS or now_ns - key[4] < _RACY_NS
