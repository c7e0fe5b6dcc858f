"""Which local files a layer reads, each read once: hashed, and when building also staged.

`Sources` is what a layer's `inputs()` asks for files through: without a `Snapshot` it only
hashes (with the stat cache); with one, every file is copied into the staging folder while it
is hashed, so the identifier describes exactly the bytes that are sent.

Rules for a copied folder, later ones winning: (1) the default excludes, anchored at the copied
folder (not for a Dockerfile's context, which Docker sends without them); (2) the patterns of one
ignore file, matched against paths relative to its folder, or to the copied folder when that is
not inside it: the image's `with_dockerignore(path)`, else for the layers' copies the project
root's `.dockerignore` (`init(root_dir=...)`, else the current folder, as in the Flyte SDK), else
one at the root of the copied folder; (3) files a layer needs whatever the patterns say (`keep`:
a project's pyproject.toml and lock) and files it replaces (`drop`).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import configured_root_dir
from .._errors import SourceError, SourceNotFoundError
from .entries import FILE, Entry, Tree
from .ignore import DEFAULT_EXCLUDES, IgnoreRules, parse_dockerignore, read_dockerignore
from .statcache import StatCache, _key
from .tree import collect_tree, hash_and_close

if TYPE_CHECKING:
    from .staging import Snapshot

_SMALL_LIMIT = 16 << 20  # requirement files, scripts, Dockerfiles: read whole, parsed from those bytes


@dataclass(frozen=True)
class Staged:
    """One path of the staged context: where it goes, and what the identifier saw of it."""

    dest: str
    entry: Entry


@dataclass
class Sources:
    """The file reader of one plan (see the module docstring)."""

    cache: StatCache | None = None
    snap: Snapshot | None = None
    dockerignore: Path | None = None
    _patterns: tuple[str, ...] | None = None

    def set_dockerignore(self, path: Path, data: bytes) -> None:
        self.dockerignore = path
        self._patterns = parse_dockerignore(data.decode("utf-8", "surrogateescape"))

    def file(self, path: Path, dest: str, what: str) -> Entry:
        """The entry of one file a layer reads (followed if it is a symlink, as COPY of a single
        file does); `what` names the parameter that named it. When building, the file is staged at
        `dest` and the digest is that of the staged copy."""
        if path.is_dir():
            raise SourceError(f"{what} {path} is a folder, a file is expected")
        try:
            if self.snap is not None:
                st, digest, read = self.snap.copy_file(None, str(path), dest, what)
                if self.cache is not None and read:  # see _Walk._leaf
                    self.cache.put(_key(st), digest, time.time_ns())
                return Entry(path.name, FILE, stat.S_IMODE(st.st_mode), digest, st.st_size)
            st = os.stat(path)
        except FileNotFoundError as exc:  # also a SourceNotFoundError: it vanished while staged
            raise SourceNotFoundError(f"{what} {path} does not exist") from exc
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{what} {path} is not a regular file")
        found = self.cache.get(_key(st)) if self.cache is not None else None
        if found is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)  # the digest and the mode come from the same open file
            found = hash_and_close(fd)
            if self.cache is not None:
                self.cache.put(_key(st), found, time.time_ns())
                self.cache.save()
        return Entry(path.name, FILE, stat.S_IMODE(st.st_mode), found, st.st_size)

    def small_file(self, path: Path, dest: str, what: str) -> tuple[Entry, bytes]:
        """Read a small file whole: its entry and bytes come from one read, and the staged copy
        is written from those bytes, so what is parsed is what is hashed and sent."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{what} {path} does not exist") from exc
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise SourceError(f"{what} {path} is a folder, a file is expected")
            data = handle.read(_SMALL_LIMIT + 1)
        if len(data) > _SMALL_LIMIT:
            raise SourceError(f"{what} {path} is larger than {_SMALL_LIMIT >> 20} MiB; that cannot be right")
        mode = stat.S_IMODE(st.st_mode)
        digest = hashlib.sha256(data).hexdigest()
        if self.snap is not None:
            self.snap.put_bytes(dest, data, mode, digest)
        return Entry(path.name, FILE, mode, digest, len(data)), data

    def ignore_file(self, folder: Path, *, project: bool = False) -> tuple[Path | None, tuple[str, ...]]:
        """The ignore file that applies to `folder` (see the module docstring) and its patterns."""
        if self.dockerignore is not None:
            patterns = self._patterns if self._patterns is not None else read_dockerignore(self.dockerignore)
            return self.dockerignore, patterns
        if project:
            root_file = Path(configured_root_dir() or Path.cwd()) / ".dockerignore"
            if root_file.is_file():
                return root_file, read_dockerignore(root_file)
        local = folder / ".dockerignore"
        return (local, read_dockerignore(local)) if local.is_file() else (None, ())

    def tree(
        self,
        folder: Path,
        dest: str,
        *,
        defaults: bool = True,
        extra: tuple[str, ...] = (),
        project: bool = False,
        keep: tuple[str, ...] = (),
        drop: tuple[str, ...] = (),
    ) -> Tree:
        """The kept entries of a copied folder (staged at `dest` when building). `project`: the
        project root's .dockerignore applies (a layer's copy, not a Dockerfile's context);
        `extra`: patterns after all others; `keep`/`drop`: paths relative to `folder` always
        sent / never sent."""
        ignore_file, patterns = self.ignore_file(folder, project=project)
        rel = "."
        if ignore_file is not None and folder.is_relative_to(ignore_file.parent):
            rel = folder.relative_to(ignore_file.parent).as_posix()
        prefix = "" if rel == "." else _literal(rel) + "/"
        # The default excludes belong to the copied folder: `.git` is its own .git, also when
        # the patterns are matched from a project root above it.
        anchored = [p if p.startswith("**/") else prefix + p for p in DEFAULT_EXCLUDES] if defaults else []
        forced = [prefix + _literal(name) for name in drop] + [f"!{prefix}{_literal(name)}" for name in keep]
        rules = IgnoreRules.from_lines([*anchored, *patterns, *forced, *extra])
        return collect_tree(folder, rules, self.cache, "" if rel == "." else rel + "/", self.snap, dest)


def _literal(path: str) -> str:
    """`path` as a .dockerignore pattern that matches only itself (a folder named `a[1]` or
    `*` is not a glob here)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", path)


_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)")


def includes(text: str, origin: Path) -> list[Path]:
    """The files a requirements text includes with -r/-c, resolved next to `origin`."""
    found = []
    for line in text.splitlines():
        match = _INCLUDE.match(line)
        if match:
            if match.group(1).startswith("/"):
                raise SourceError(
                    f"{origin} includes {match.group(1)} by an absolute path, which does not exist inside "
                    f"the build; write it relative to {origin.parent} (e.g. -r ../shared.txt)"
                )
            found.append(Path(os.path.normpath(origin.parent / match.group(1))))
    return found


def relative_to_first(paths: list[Path]) -> list[str]:
    """Paths of included files relative to the first one's folder, '/'-separated."""
    base = paths[0].parent
    return [Path(os.path.relpath(p, base)).as_posix() for p in paths]
