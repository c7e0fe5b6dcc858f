"""One copy layer as a registry blob: the tar BuildKit's `COPY ["_fi/<n>/", "<dst>/"]` makes of a
staged folder, built without an engine (proven byte for byte by tests/test_engine_append.py).

As the COPY does, `dst` and its parents the image lacks are made 0755 owned by the COPY's owner
(root, or the --chown user), those it has keep their mode and owner, and everything below `dst`
is copied as staged (symlinks as links), owned by the COPY's owner. Every folder on the way is
listed with the metadata it has after the COPY: unpackers that apply a layer into an empty folder
(dockerd's overlay2) make an unlisted parent root 0755, hiding, say, /home/flyte's own owner.

The bytes depend only on the staged folder (sorted entries, empty user and group names, staged
times in whole seconds, a gzip header without name or time, or one zstd frame made in one
thread), so an unchanged layer is never uploaded again. A layer is made as a stream in constant
memory: files are read CHUNK bytes at a time, the tar is hashed (the diff_id) into gzip or zstd,
and the compressed stream hashed (the digest) into
memory up to SPOOL_MEMORY, beyond that into an unnamed temporary file in the cache folder, gone
with the process. (The digest must be known before the upload starts, so one pass keeps the
stream; two would read and compress every file twice.)
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from .._errors import BuildError
from .._files.staging import FIXED_MTIME
from .._files.statcache import cache_dir
from .part import dst_folders, normalize_dst

GZIP_LEVEL = 1  # source files compress well even at 1; level 6 took twice as long for a 300-file folder
CHUNK = 1 << 20  # bytes of a file read (and of the tar handed to gzip) at a time
SPOOL_MEMORY = 8 << 20  # a gzip stream up to this stays in memory; a longer one goes to a temporary file
# zstd's own default, which BuildKit's zstd layers use too: faster than gzip at level 1 and smaller.
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class LayerBlob:
    """A compressed layer tarball with its two digests. `data` is the compressed stream itself,
    or for a long one the unnamed temporary file that holds it (see `content`, `chunks`)."""

    data: bytes | IO[bytes] = field(compare=False)  # the digest stands for the content in comparisons
    diff_id: str  # sha256 of the uncompressed tar (the image config's rootfs.diff_ids)
    digest: str  # sha256 of the compressed stream (the manifest's layer descriptor)
    created_by: str = ""  # the history entry's text
    compression: str = "gzip"  # or "zstd": the layer media type's suffix

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else os.fstat(self.data.fileno()).st_size

    @property
    def spooled(self) -> bool:
        return not isinstance(self.data, bytes)

    def content(self) -> bytes:
        """The whole gzip stream (read from its spool when there is one)."""
        return self.data if isinstance(self.data, bytes) else b"".join(self.chunks())

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The gzip stream from its start, `size` bytes at a time (a spool is read by positional
        reads, so several readers may share it)."""
        if isinstance(self.data, bytes):
            yield from (self.data[start : start + size] for start in range(0, len(self.data), size))
            return
        fd, offset, total = self.data.fileno(), 0, self.size
        while offset < total:
            try:
                chunk = os.pread(fd, min(size, total - offset), offset)
            except OSError as exc:
                raise BuildError(
                    f"cannot read back the spooled layer in {cache_dir()}: {exc.strerror}; build again"
                ) from None
            if not chunk:
                raise BuildError(f"the spooled layer ended after {offset} of {total} bytes; build again")
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        """Let go of the spool's temporary file (a layer in memory has nothing to let go of)."""
        if not isinstance(self.data, bytes):
            self.data.close()


@dataclass(frozen=True)
class Folder:
    """A folder's metadata in a layer."""

    mode: int
    uid: int
    gid: int
    mtime: int = FIXED_MTIME


def copy_layer(
    folder: Path,
    dst: str,
    *,
    owner: tuple[int, int] = (0, 0),
    folders: Mapping[str, Folder] | None = None,
    created_by: str = "",
    level: int = GZIP_LEVEL,
    compression: str = "gzip",
) -> tuple[LayerBlob, dict[str, Folder]]:
    """The layer `COPY <folder>/ <dst>/` adds, as a deterministic compressed tar (`compression`
    gzip at `level`, or zstd), and the folders the copy makes below `dst` as tar paths with what
    the layer gives them (for later copies into them), from one walk of `folder`. `owner`: the
    uid/gid of every copied entry (`--chown`, as numbers); `folders`: `dst` and its parents as the
    image has them after the copy (one not given is made 0755, `owner`)."""
    if not folder.is_dir() or folder.is_symlink():
        raise BuildError(f"{folder} is not a staged folder; stage the image (staged_plan) before making its layers")
    root = normalize_dst(dst)
    given = folders or {}
    unknown = [path for path in given if path not in dst_folders(dst)]
    if unknown:
        raise BuildError(f"{unknown[0]!r} is not {dst!r} or one of its parents; only those are written by the copy")
    if compression not in ("gzip", "zstd"):
        raise BuildError(f"compression={compression!r} is not gzip or zstd; give one of those")
    out = _Out()
    below: dict[str, Folder] = {}
    try:
        with _compressor(out, compression, level) as stream:
            tar = _Tar(stream.write)
            for path in dst_folders(dst):
                meta = given.get(path) or Folder(0o755, *owner)
                tar.add(path, _DIR, meta.mode, meta.mtime, (meta.uid, meta.gid))
            base = os.fspath(folder)
            for rel in _walk(folder):
                name = posixpath.join(root, rel) if root else rel
                made = _add(tar, os.path.join(base, rel), name, owner)
                if made is not None:
                    below[name] = made
            tar.finish()
    except BaseException:
        out.discard()
        raise
    blob = LayerBlob(
        data=out.result(), diff_id=tar.digest, digest=out.digest, created_by=created_by, compression=compression
    )
    return blob, below


def _compressor(out: _Out, compression: str, level: int) -> Any:
    """A writable stream that compresses into `out` and ends its stream when closed."""
    if compression == "zstd":
        import zstandard  # here: only a zstd layer needs it

        # One thread and no content size in the frame (a stream): the same tar, the same bytes.
        # `_Out` has the write and flush a stream writer calls, not the whole of IO.
        sink = cast("IO[bytes]", out)
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(sink, closefd=False)
    import gzip

    # No file name and time 0 in the gzip header: the digest depends on the tar alone.
    return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level)


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


class _Out:
    """Where the compressed stream goes: hashed (the layer's digest), then held in memory up to
    SPOOL_MEMORY bytes and beyond that written to an unnamed temporary file."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._held: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._size = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        self._hash.update(data)
        self._size += len(data)
        try:
            if self._file is None and self._size > SPOOL_MEMORY:
                self._file = _spool_file()
                for held in self._held:
                    self._file.write(held)
                self._held = []
            if self._file is None:
                self._held.append(bytes(data))
            else:
                self._file.write(data)
        except OSError as exc:
            raise _spool_error(exc) from exc
        return len(data)

    def flush(self) -> None:
        pass  # the compressors' file protocol asks for it; the temporary file is flushed once, by `result`

    def result(self) -> bytes | IO[bytes]:
        if self._file is None:
            return b"".join(self._held)
        try:
            self._file.flush()
        except OSError as exc:
            self.discard()
            raise _spool_error(exc) from exc
        return self._file

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self._held = []


def _spool_file() -> IO[bytes]:
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=folder, prefix=".layer-")  # unnamed: gone with the process


def _spool_error(exc: OSError) -> BuildError:
    where = cache_dir()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BuildError(
            f"no space left in {where} for a layer being appended ({exc.strerror}); free disk space, or point "
            "FLYTE_IMAGES_CACHE_DIR at a folder on a bigger disk"
        )
    return BuildError(f"cannot write a layer being appended to {where}: {exc.strerror}")


class _Tar:
    """A tar archive byte for byte as `tarfile` writes one in PAX format, streamed to `sink` CHUNK
    bytes at a time; `digest` is its SHA-256. Headers are made here (tarfile only for the rare pax
    ones): tarfile's per-entry work cost more than reading a source folder's small files."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self._parts: list[bytes] = []
        self._pending = 0
        self._size = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def add(
        self, name: str, kind: bytes, mode: int, mtime: int, owner: tuple[int, int], size: int = 0, link: str = ""
    ) -> None:
        """An entry's header (a file's content follows: `add_file`)."""
        if kind == _DIR and not name.endswith("/"):
            name += "/"
        self._put(
            _ustar(name, kind, mode, mtime, owner, size, link) or _pax(name, kind, mode, mtime, owner, size, link)
        )

    def add_file(self, name: str, mode: int, mtime: int, owner: tuple[int, int], path: str, size: int) -> None:
        """A file's entry, its content read from `path` in chunks; the file must hold exactly
        `size` bytes (its size when it was listed) from start to end."""
        self.add(name, _FILE, mode, mtime, owner, size)
        with open(path, "rb", buffering=0) as fh:
            left = size
            while left:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    break
                self._put(chunk)
                left -= len(chunk)
            if left or fh.read(1):
                raise BuildError(f"{path} changed while its layer was made; stage the image again")
        if size % _BLOCK:
            self._put(bytes(_BLOCK - size % _BLOCK))

    def _put(self, chunk: bytes) -> None:
        self._parts.append(chunk)
        self._pending += len(chunk)
        self._size += len(chunk)
        if self._pending >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._pending = [], 0
        self._hash.update(data)
        self._sink(data)

    def finish(self) -> None:
        self._put(bytes(2 * _BLOCK))
        if self._size % _RECORD:
            self._put(bytes(_RECORD - self._size % _RECORD))
        self._flush()


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


def _add(tar: _Tar, path: str, name: str, owner: tuple[int, int]) -> Folder | None:
    """The entry of `path` as `name`; for a folder, what the layer gives it."""
    st = os.lstat(path)
    mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        tar.add(name, _DIR, mode, mtime, owner)
        return Folder(mode, *owner, mtime)
    if stat.S_ISLNK(st.st_mode):
        tar.add(name, _LINK, mode, mtime, owner, link=os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        tar.add_file(name, mode, mtime, owner, path, st.st_size)
    else:
        raise BuildError(f"{path} is neither a file, a folder nor a symlink; staging never makes one, so restage")
    return None
