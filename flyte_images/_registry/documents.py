"""Manifests and image configs kept on disk by digest, so reading an image named by digest a
second time asks the registry nothing. Every read checks the content against its digest (a
damaged or planted file is a miss); the folder is never used through a symlink and is trimmed,
oldest first, of names this module writes only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

from .._files.statcache import (
    DIR_NOFOLLOW,
    cache_dir,
    is_temporary_name,
    open_cache_folder,
    read_cache_file,
    write_atomically,
)

MAX_DOCUMENT = 1024 * 1024
MAX_FOLDER = 32 * 1024 * 1024
# A media type is a short ASCII name (the longest registered ones are under 100 characters).
_MAX_MEDIA_TYPE = 255
_ALGORITHMS = {"sha256": 64, "sha512": 128}  # algorithm: hex digits of its digests


def _folder() -> Path:
    return cache_dir() / "documents"


def _name(digest: str) -> str | None:
    algorithm, _, value = digest.partition(":")
    if _ALGORITHMS.get(algorithm) != len(value) or not all(c in "0123456789abcdef" for c in value):
        return None
    return f"{algorithm}-{value}"


def get(digest: str) -> tuple[bytes, str] | None:
    """The content named `digest` and the media type it was served with, when kept."""
    name = _name(digest)
    if name is None:
        return None
    try:
        dfd = os.open(_folder(), DIR_NOFOLLOW)
    except OSError:
        return None
    try:
        data = read_cache_file(name, MAX_DOCUMENT + _MAX_MEDIA_TYPE + 1, dir_fd=dfd)
    finally:
        os.close(dfd)
    if data is None:
        return None
    media, newline, content = bytes(data).partition(b"\n")
    algorithm, _, value = digest.partition(":")
    if not newline or len(media) > _MAX_MEDIA_TYPE or hashlib.new(algorithm, content).hexdigest() != value:
        return None
    return content, media.decode("ascii", "replace")


def put(digest: str, content: bytes, media_type: str) -> None:
    """Keep `content` (already checked against `digest`) with its media type; best effort."""
    name = _name(digest)
    if name is None or len(content) > MAX_DOCUMENT or len(media_type) > _MAX_MEDIA_TYPE:
        return
    if "\n" in media_type or not media_type.isascii():
        return
    with contextlib.suppress(OSError):
        dfd = open_cache_folder(_folder())
        try:
            write_atomically(dfd, name, media_type.encode() + b"\n" + content)
            _trim(dfd)
        finally:
            os.close(dfd)


def _trim(dfd: int) -> None:
    """Remove the oldest documents beyond MAX_FOLDER, and temporary files an hour old (left by
    a process killed while writing); nothing else is ever removed."""
    entries = []
    stale = time.time() - 3600
    with os.scandir(dfd) as found:
        for entry in found:
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if _is_document(entry.name):
                    entries.append((info.st_mtime, info.st_size, entry.name))
                elif _is_temporary(entry.name) and info.st_mtime < stale:
                    os.unlink(entry.name, dir_fd=dfd)
    total = sum(size for _t, size, _n in entries)
    for _time, size, old in sorted(entries):
        if total <= MAX_FOLDER:
            break
        with contextlib.suppress(OSError):
            os.unlink(old, dir_fd=dfd)
        total -= size


def _is_document(name: str) -> bool:
    algorithm, _, value = name.partition("-")
    return _name(f"{algorithm}:{value}") == name


def _is_temporary(name: str) -> bool:
    written = name[1:].rpartition(".")[0].rpartition(".")[0]  # .<written>.<16 hex>.tmp
    return _is_document(written) and is_temporary_name(name, written)
