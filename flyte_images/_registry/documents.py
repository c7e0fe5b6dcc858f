"""Manifests and image configs kept on disk by digest, so that reading an image named by digest
a second time asks the registry nothing.

A digest names exactly one content, so what is kept never goes stale; every read checks the
content against its digest (a damaged or planted file is a miss, never an answer). Only small
documents are kept (manifests, indexes, configs); the folder is trimmed, oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from .._statcache import cache_dir

MAX_DOCUMENT = 1024 * 1024
MAX_FOLDER = 32 * 1024 * 1024
_ALGORITHMS = ("sha256", "sha512")


def _file(digest: str) -> Path | None:
    algorithm, _, value = digest.partition(":")
    if algorithm not in _ALGORITHMS or not value or not all(c in "0123456789abcdef" for c in value):
        return None
    return cache_dir() / "documents" / f"{algorithm}-{value}"


def get(digest: str) -> tuple[bytes, str] | None:
    """The content named `digest` and the media type it was served with, when kept."""
    path = _file(digest)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    media, newline, content = data.partition(b"\n")
    algorithm, _, value = digest.partition(":")
    if not newline or hashlib.new(algorithm, content).hexdigest() != value:
        return None
    return content, media.decode("ascii", "replace")


def put(digest: str, content: bytes, media_type: str) -> None:
    """Keep `content` (already checked against `digest`) with its media type; best effort."""
    path = _file(digest)
    if path is None or len(content) > MAX_DOCUMENT or "\n" in media_type or not media_type.isascii():
        return
    temp = None
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".doc-", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(media_type.encode() + b"\n" + content)
        os.replace(temp, path)
        temp = None
        _trim(path.parent)
    if temp is not None:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _trim(folder: Path) -> None:
    entries = []
    with os.scandir(folder) as found:
        for entry in found:
            with contextlib.suppress(OSError):
                info = entry.stat()
                entries.append((info.st_mtime, info.st_size, entry.path))
    total = sum(size for _t, size, _p in entries)
    for _time, size, old in sorted(entries):
        if total <= MAX_FOLDER:
            break
        with contextlib.suppress(OSError):
            os.unlink(old)
        total -= size
