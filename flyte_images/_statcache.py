"""The stat cache: a file's SHA-256 remembered under its stat key, so an unchanged file is not read.

Keyed on (device, inode, size, mtime_ns, ctime_ns). It lives in memory and in one file under the
user cache folder; it is off when `CI` is set (fresh checkouts gain nothing from it) and when
`FLYTE_IMAGES_STAT_CACHE=0`; `FLYTE_IMAGES_STAT_CACHE=1` forces it on. Nothing whose times are
within two seconds of the moment it was read is remembered: a file written again within the
same timestamp tick could otherwise keep a stale digest.

A remembered digest goes straight into an identifier, so the file must never be trusted unless it
is exactly what we wrote: it is a format line, the SHA-256 of the payload, then the payload (the
marshalled dict). A file whose format line, checksum or shape is wrong (a flipped bit, a torn
write, another version's file) is ignored as a whole: the cache starts empty, files are hashed
again, and the next save replaces it.
"""

from __future__ import annotations

import hashlib
import itertools
import marshal
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from ._ignore import IgnoreRules
    from ._treememo import _TreeMemo

_RACY_NS = 2_000_000_000
# Version 2 added the checksum; the file name carries the version too, so a version-1 file (no
# checksum) is never even read.
_CACHE_FORMAT = b"flyte-images-stat-cache-2\n"
_CACHE_FILE_NAME = "stat-cache-v2.bin"
_MEMO_DIR_NAME = "tree-memo-v1"  # the walks' memo files (see `_files`), beside the cache file
_CHECKSUM_BYTES = hashlib.sha256().digest_size
_CACHE_MAX_ENTRIES = 1_000_000
_DIGEST_HEX_CHARS = 64
_KEY_FIELDS = 5  # the length of a StatKey

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
    """Digest per stat key, in memory, loaded from and saved to one file (atomically).

    `trees` remembers whole walks (see `_files`); with `memo_dir` they are kept between
    processes too, one file per walk in that folder."""

    def __init__(self, path: Path | None, memo_dir: Path | None = None) -> None:
        self._path = path
        self.memo_dir = memo_dir
        self._digests: dict[StatKey, str] | None = None
        self._dirty = False
        self._lock = threading.Lock()
        self.trees: dict[tuple[str, str, IgnoreRules], _TreeMemo] = {}

    def _load(self) -> dict[StatKey, str]:
        digests = self._digests
        if digests is not None:
            return digests
        with self._lock:  # walks run in threads: load once, so no put lands in a dict then replaced
            if self._digests is None:
                loaded = _read_cache_file(self._path) if self._path is not None else {}
                # An unusable file is replaced at the next save even if nothing new is learnt.
                self._dirty = loaded is None
                self._digests = loaded or {}
            return self._digests

    def get(self, key: StatKey) -> str | None:
        return self._load().get(key)

    def put(self, key: StatKey, digest: str, now_ns: int) -> None:
        if _racy(key, now_ns):
            return
        digests = self._load()
        if digests.get(key) == digest:
            return  # known already: nothing to write
        with self._lock:
            if len(digests) >= _CACHE_MAX_ENTRIES:
                digests.clear()
            digests[key] = digest
            self._dirty = True

    def save(self) -> None:
        """Write the cache file if anything was added (or it was unusable); failing to write is not an error."""
        if not self._dirty or self._path is None or self._digests is None:
            return
        with self._lock:
            payload = marshal.dumps(self._digests)
            self._dirty = False
        try:
            _write_atomically(self._path, _CACHE_FORMAT + hashlib.sha256(payload).digest() + payload)
        except OSError:
            self._dirty = True  # not written (read-only or full disk): try again at the next save


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file + rename: a reader sees the old file or the new one, never half of one."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stat-cache-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read_cache_file(path: Path) -> dict[StatKey, str] | None:
    """The entries of the cache file: {} when there is none, None when it is not intact."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    return _decode(raw)


def _decode(raw: bytes) -> dict[StatKey, str] | None:
    """The entries of a cache file's bytes, or None unless format line, checksum and shape hold.

    The checksum is checked before marshal sees a byte: marshal is not meant for damaged input.
    """
    start = len(_CACHE_FORMAT) + _CHECKSUM_BYTES
    if len(raw) < start or not raw.startswith(_CACHE_FORMAT):
        return None
    payload = memoryview(raw)[start:]
    if hashlib.sha256(payload).digest() != raw[len(_CACHE_FORMAT) : start]:
        return None
    try:
        loaded = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    return loaded if _well_formed(loaded) else None


def _well_formed(loaded: object) -> TypeGuard[dict[StatKey, str]]:
    """True for a dict of 5-int tuples to lowercase 64-hex-digit strings.

    Every entry is checked once, here, with set(map(...)) so that the loops run in C: ~10k
    entries take a few ms, where a Python loop over them would cost more than the load itself.
    """
    if type(loaded) is not dict:
        return False
    if not loaded:
        return True
    keys, digests = loaded.keys(), loaded.values()
    return (
        set(map(type, keys)) == {tuple}
        and set(map(len, keys)) == {_KEY_FIELDS}
        and set(map(type, itertools.chain.from_iterable(keys))) == {int}
        and set(map(type, digests)) == {str}
        and set(map(len, digests)) == {_DIGEST_HEX_CHARS}
        and _lowercase_hex("".join(digests))
    )


def _lowercase_hex(text: str) -> bool:
    try:
        decoded = bytes.fromhex(text)
    except ValueError:
        return False
    # fromhex also skips whitespace and reads upper case; a digest we wrote has neither, and an
    # upper-case digest would change an identifier.
    return len(decoded) * 2 == len(text) and text == text.lower()


_shared_cache: StatCache | None = None


def shared_stat_cache(enabled: bool | None = None) -> StatCache | None:
    """The process-wide stat cache, or None when it is off (`enabled` overrides the environment)."""
    global _shared_cache  # noqa: PLW0603 - one cache per process is the point
    if not (stat_cache_enabled() if enabled is None else enabled):
        return None
    if _shared_cache is None:
        folder = cache_dir()
        _shared_cache = StatCache(folder / _CACHE_FILE_NAME, folder / _MEMO_DIR_NAME)
    return _shared_cache


def reset_shared_stat_cache() -> None:
    """Forget the in-memory cache (the file stays); used by tests and benchmarks."""
    global _shared_cache  # noqa: PLW0603
    _shared_cache = None


def _key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _racy(key: StatKey, now_ns: int) -> bool:
    return now_ns - key[3] < _RACY_NS or now_ns - key[4] < _RACY_NS
