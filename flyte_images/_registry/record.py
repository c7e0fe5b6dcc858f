"""What this machine pushed, so an immediate second build skips despite a registry's
read-after-write lag: a "missing" for a reference pushed from here less than RECENT seconds ago
with the same platforms is taken as lag (an "unknown" never). Also the platforms of manifests by
digest.

Each is a file in the cache folder of a format line, then one JSON line per entry, appended as
builds learn them; the last line of a key is its answer. A lookup reads the file and parses only
the line it finds, and a new entry is one appended line, so neither costs more as the file grows
(a JSON document of every entry would be parsed whole on every check and written again on every
push). Past its compaction size a file is written again (atomically) with its newer half. Files
are read as every cache file is (bounded, never through a symlink); a line that is damaged, cut
short or of another format is a miss, never believed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from .._files.statcache import append_cache_lines, cache_dir, cache_lines

RECENT = 300.0
# The largest files read (far above what compaction leaves), and the sizes past which they are
# compacted: about 3,000 pushes and 20,000 digests with their platforms.
_MAX_RECORD_BYTES = 8 << 20
_MAX_PLATFORMS_BYTES = 32 << 20
_PUSHED_COMPACT = 512 << 10
_PLATFORMS_COMPACT = 2 << 20
_PUSHED_HEAD = b'["flyte-images pushes",2]\n'
_PLATFORMS_HEAD = b'["flyte-images manifest platforms",2]\n'


def _path() -> Path:
    return cache_dir() / "pushed.json"


def remember_push(reference: str, digest: str | None, platforms: Sequence[str]) -> None:
    line = _line([reference, digest, sorted(platforms), time.time()])
    with contextlib.suppress(OSError):
        append_cache_lines(_path(), _PUSHED_HEAD, line, _PUSHED_COMPACT, _MAX_RECORD_BYTES, follow=True)


def recent_push(reference: str, platforms: Sequence[str]) -> dict[str, object] | None:
    """The record of a push of `reference` with these platforms in the last RECENT seconds:
    its digest, platforms and time."""
    found = _last(cache_lines(_path(), _PUSHED_HEAD, _MAX_RECORD_BYTES), reference)
    if found is None or len(found) != 4:
        return None
    _reference, digest, recorded, when = found
    if not isinstance(recorded, list) or not isinstance(when, (int, float)) or isinstance(when, bool):
        return None
    fresh = time.time() - when < RECENT
    covers = set(platforms) <= {p for p in recorded if isinstance(p, str)}
    return {"digest": digest, "platforms": recorded, "time": when} if fresh and covers else None


class PlatformCache:
    """Platforms of manifests by digest (never stale: a digest names immutable content); it
    spares the config-blob request of a repeated check. Lines `["<digest>",["<platform>",...]]`."""

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
            self._lines = (
                b"\n" if self._path is None else cache_lines(self._path, _PLATFORMS_HEAD, _MAX_PLATFORMS_BYTES)
            )
        found = _last(self._lines, digest)
        if found is None or len(found) != 2 or not isinstance(found[1], list):
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
        lines = b"".join(_line([digest, platforms]) for digest, platforms in self._new.items())
        with contextlib.suppress(OSError):
            path, bound = self._path, _MAX_PLATFORMS_BYTES
            append_cache_lines(path, _PLATFORMS_HEAD, lines, _PLATFORMS_COMPACT, bound, follow=True)
            self._lines, self._new = None, {}


def _line(entry: list[object]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def _last(lines: bytes, key: str) -> list[object] | None:
    """The last whole line of `key` (as `_line` writes it: a JSON list starting with the key),
    parsed; None when there is none or it is damaged."""
    start = lines.rfind(b"\n[" + json.dumps(key).encode() + b",")
    end = lines.find(b"\n", start + 1) if start >= 0 else -1
    if end < 0:
        return None
    try:
        found = json.loads(lines[start + 1 : end])
    except ValueError:
        return None
    return found if isinstance(found, list) and found and found[0] == key else None
