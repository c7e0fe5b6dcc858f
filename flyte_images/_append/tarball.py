"""One copy layer as a registry blob: the tar BuildKit's `COPY ["_fi/<n>/", "<dst>/"]` makes
of a staged folder, built without an engine.

What the COPY does, and so what the tar holds (checked on dockerd 20.10's BuildKit and on
buildkitd 0.13, and proven by tests/test_engine_append.py):

- `dst` and its parents that the image lacks are made as folders 0755 owned by the COPY's
  owner (root, or the --chown user); those the image has are left as they are, mode and owner
  included (the source folder's own mode is not applied to `dst`);
- everything below `dst` is copied as staged: files with their mode and time, folders,
  symlinks as links (never followed), all owned by the COPY's owner.

A layer lists every folder on the way to what it adds, with the metadata that folder has in
the image after the COPY (`folders`): unpackers that apply a layer into its own empty folder
(dockerd's overlay2 store does) make a parent the tar does not list as root 0755, which would
hide the image's own owner and mode of, say, /home/flyte.

The bytes depend only on the staged folder: entries are sorted, user and group names are
empty, times are the staged ones in whole seconds (the staging sets them from the content,
see `_stage.content_mtime_ns`), and the gzip stream has no name and time 0. The same folder
therefore always gives the same digest, so an unchanged layer is never uploaded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .._errors import BuildError
from .._stage import FIXED_MTIME

GZIP_LEVEL = 1  # source files compress well even at 1; level 6 took twice as long for a 300-file folder


@dataclass(frozen=True)
class LayerBlob:
    """A gzipped layer tarball with its two digests."""

    data: bytes  # the gzip stream, as uploaded
    diff_id: str  # sha256 of the uncompressed tar (the image config's rootfs.diff_ids)
    digest: str  # sha256 of `data` (the manifest's layer descriptor)
    created_by: str = ""  # the history entry's text

    @property
    def size(self) -> int:
        return len(self.data)


def normalize_dst(dst: str) -> str:
    """An absolute destination as a tar path without slashes at either end ("" is the root)."""
    if not dst.startswith("/"):
        raise BuildError(
            f"the copy destination {dst!r} is relative; resolve it against the image's working folder first"
        )
    parts = [p for p in dst.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"the copy destination {dst!r} has '..'; give the folder it means without it")
    return "/".join(parts)


def dst_folders(dst: str) -> list[str]:
    """`dst` and its parents as tar paths, outermost first ("/a/b" -> ["a", "a/b"])."""
    root = normalize_dst(dst)
    parts = root.split("/") if root else []
    return ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]


@dataclass(frozen=True)
class Folder:
    """A folder's metadata in a layer."""

    mode: int
    uid: int
    gid: int
    mtime: int = FIXED_MTIME


def layer_tar(
    folder: Path,
    dst: str,
    *,
    owner: tuple[int, int] = (0, 0),
    folders: Mapping[str, Folder] | None = None,
    created_by: str = "",
    level: int = GZIP_LEVEL,
) -> LayerBlob:
    """The layer `COPY <folder>/ <dst>/` adds, as a deterministic gzipped tar.

    `folder` is the staged `_fi/<n>` folder (its contents land in `dst`); `owner` is the
    uid/gid every copied entry gets (what `--chown` would set, given as numbers); `folders`
    gives `dst` and each of its parents (`dst_folders(dst)`) as the image has them after the
    copy; one not given is written as the copy creates it (0755, `owner`)."""
    if not folder.is_dir() or folder.is_symlink():
        raise BuildError(f"{folder} is not a staged folder; stage the image (staged_plan) before making its layers")
    root = normalize_dst(dst)
    given = folders or {}
    unknown = [path for path in given if path not in dst_folders(dst)]
    if unknown:
        raise BuildError(f"{unknown[0]!r} is not {dst!r} or one of its parents; only those are written by the copy")
    import gzip

    tar = _Tar()
    for path in dst_folders(dst):
        meta = given.get(path) or Folder(0o755, *owner)
        tar.add(path, _DIR, meta.mode, meta.mtime, (meta.uid, meta.gid))
    base = os.fspath(folder)
    for rel in _walk(folder):
        _add(tar, os.path.join(base, rel), posixpath.join(root, rel) if root else rel, owner)
    tar_bytes = tar.finish()
    packed = io.BytesIO()
    # No file name and time 0 in the gzip header: the digest depends on the tar alone.
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=level) as gz:
        gz.write(tar_bytes)
    data = packed.getvalue()
    return LayerBlob(
        data=data,
        diff_id="sha256:" + hashlib.sha256(tar_bytes).hexdigest(),
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        created_by=created_by,
    )


def staged_folders(folder: Path, dst: str, owner: tuple[int, int]) -> dict[str, Folder]:
    """The folders a copy of `folder` to `dst` makes below `dst`, as tar paths, with what the
    layer gives them (for later copies into them)."""
    root = normalize_dst(dst)
    out: dict[str, Folder] = {}
    for rel in _walk(folder):
        st = os.lstat(folder / rel)
        if stat.S_ISDIR(st.st_mode):
            name = posixpath.join(root, rel) if root else rel
            out[name] = Folder(stat.S_IMODE(st.st_mode), *owner, int(st.st_mtime))
    return out


def _walk(folder: Path) -> list[str]:
    """Every path below `folder` (relative, "/"-separated), each folder before its contents and
    siblings in byte order of their names, so the order never depends on the file system."""
    out: list[str] = []
    for here, dirs, files in os.walk(folder, onerror=_unreadable):  # links to folders: listed, not followed
        rel = os.path.relpath(here, folder)
        out += [name if rel == "." else f"{rel}/{name}" for name in (*dirs, *files)]
    return sorted(out, key=lambda p: [os.fsencode(part) for part in p.split("/")])


def _unreadable(exc: OSError) -> None:
    # os.walk skips what it cannot list; a layer missing files must not be pushed.
    raise BuildError(f"cannot read the staged folder {exc.filename}: {exc.strerror}; stage the image again") from exc


_FILE, _DIR, _LINK = b"0", b"5", b"2"
_BLOCK, _RECORD = 512, 512 * 20
_MAX_ID, _MAX_SIZE, _MAX_TIME = 8**7, 8**11, 8**11


class _Tar:
    """A POSIX tar archive in memory, as `tarfile` writes one in its PAX format: a ustar header
    per entry (a pax extended header before it only for what ustar cannot hold), data padded to
    512 bytes, two zero blocks and padding to a 10 KiB record at the end. Headers are made here
    (tarfile for the rare pax ones): a source folder has hundreds of small files, and tarfile's
    per-entry work cost more than reading them."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def add(
        self, name: str, kind: bytes, mode: int, mtime: int, owner: tuple[int, int], data: bytes = b"", link: str = ""
    ) -> None:
        if kind == _DIR and not name.endswith("/"):
            name += "/"
        header = _ustar(name, kind, mode, mtime, owner, len(data), link) or _pax(
            name, kind, mode, mtime, owner, len(data), link
        )
        self._put(header)
        if data:
            self._put(data)
            if len(data) % _BLOCK:
                self._put(bytes(_BLOCK - len(data) % _BLOCK))

    def _put(self, chunk: bytes) -> None:
        self._parts.append(chunk)
        self._size += len(chunk)

    def finish(self) -> bytes:
        self._put(bytes(2 * _BLOCK))
        if self._size % _RECORD:
            self._put(bytes(_RECORD - self._size % _RECORD))
        return b"".join(self._parts)


def _ustar(name: str, kind: bytes, mode: int, mtime: int, owner: tuple[int, int], size: int, link: str) -> bytes | None:
    """A ustar header block, or None when a field does not fit (pax then)."""
    if not (name.isascii() and link.isascii() and len(name) <= 100 and len(link) <= 100):
        return None
    uid, gid = owner
    if not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID and 0 <= size < _MAX_SIZE and 0 <= mtime < _MAX_TIME):
        return None
    block = b"".join(
        (
            name.encode().ljust(100, b"\0"),
            b"%07o\0" % (mode & 0o7777),
            b"%07o\0" % uid,
            b"%07o\0" % gid,
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b"        ",  # the checksum, counted as spaces
            kind,
            link.encode().ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(32 + 32 + 8 + 8 + 155),  # user and group names (empty), device numbers, prefix
        )
    ).ljust(_BLOCK, b"\0")
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


def _pax(name: str, kind: bytes, mode: int, mtime: int, owner: tuple[int, int], size: int, link: str) -> bytes:
    import tarfile

    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size, info.linkname = kind, mode, mtime, size, link
    info.uid, info.gid = owner
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _add(tar: _Tar, path: str, name: str, owner: tuple[int, int]) -> None:
    st = os.lstat(path)
    mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        tar.add(name, _DIR, mode, mtime, owner)
    elif stat.S_ISLNK(st.st_mode):
        tar.add(name, _LINK, mode, mtime, owner, link=os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as fh:
            data = fh.read()
        if len(data) != st.st_size:
            raise BuildError(f"{path} changed while its layer was made; stage the image again")
        tar.add(name, _FILE, mode, mtime, owner, data)
    else:
        raise BuildError(f"{path} is neither a file, a folder nor a symlink; staging never makes one, so restage")
