"""One path of a base image's merged file system as its layers give it: what `layerscan` reads
from a layer and `basefs` keeps on disk."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal

Kind = Literal["file", "dir", "symlink", "other"]
KINDS = ("file", "dir", "symlink", "other")
MAX_CONTENT = 1024 * 1024  # a passwd or group file; anything bigger is not what was meant


@dataclass(frozen=True)
class Entry:
    """One path of the image's merged file system, as the highest layer that has it says."""

    path: str  # relative, no slashes at either end: "etc/passwd"
    kind: Kind  # a hard link is a "file"
    mode: int  # permission bits (with setuid, setgid, sticky)
    uid: int
    gid: int
    mtime: int  # seconds
    linkname: str = ""  # a symlink's target
    content: bytes | None = None  # a file's bytes, for paths asked with their content


def normalize(name: str) -> str:
    """A tar member name or asked path as a key: "./etc/passwd", "/etc/passwd/" -> "etc/passwd"."""
    return posixpath.normpath("/" + name).lstrip("/")
