"""One layer blob of a registry read as a tar stream, for what it says about a few paths
(`basefs` merges what the layers say). A layer can be gigabytes, so it is never held: its chunks
arrive on the event loop (`Registry.blob_chunks`) and `tarfile` pulls them one at a time in a
worker thread. Only the members asked about are kept, with the content of files asked with
theirs (up to MAX_CONTENT). The layer is read to its end, so its digest is always checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib
import io
import posixpath
import tarfile
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import BuildError, RegistryError
from .._registry import Reference, Registry, wire
from .fsentry import MAX_CONTENT, Entry, Kind, normalize

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1 << 16
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"

Unpack = Callable[[io.BufferedIOBase], io.BufferedIOBase]


@dataclass(frozen=True)
class Seen:
    """What one layer says about the paths of interest (and their folders)."""

    entries: Mapping[str, Entry]  # the last member of each name
    links: Mapping[str, str]  # hard link -> its target, whose content it shares
    big: Mapping[str, int]  # files whose content was asked but is over MAX_CONTENT: their size
    whiteouts: frozenset[str]  # paths this layer deletes from the ones below
    opaque: frozenset[str]  # folders whose lower contents this layer hides ("" for the root)


async def scan_layer(
    registry: Registry, ref: Reference, layer: Mapping[str, Any], interest: frozenset[str], wanted: frozenset[str]
) -> Seen:
    """What the layer with descriptor `layer` says about the paths in `interest`, with the
    content of the files in `wanted`."""
    digest, media, size = layer.get("digest"), layer.get("mediaType"), layer.get("size")
    if not isinstance(digest, str) or not wire.is_digest(digest) or not isinstance(media, str):
        raise RegistryError(f"a layer of {ref} has no digest or media type; is its manifest an image manifest?")
    what = f"the layer {digest} of {ref} ({media[:100]})"
    unpack = unpacker(media, what)
    loop = asyncio.get_running_loop()
    known = size if isinstance(size, int) and not isinstance(size, bool) else None
    async with contextlib.aclosing(registry.blob_chunks(ref, digest, known)) as chunks:
        feed = _Chunks(chunks, loop)
        try:
            return await asyncio.to_thread(_scan, io.BufferedReader(feed, CHUNK), unpack, interest, wanted, what)
        finally:
            await feed.stop()  # before the blob is closed (a cancelled lookup leaves the worker behind)


def unpacker(media: str, what: str) -> Unpack:
    """The decompression of a layer media type: gzip, zstd (when a module for it is installed)
    or none; a BuildError for anything else."""
    if media.endswith(("+gzip", ".gzip")):
        return lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")
    if media.endswith(("+zstd", ".zstd")):
        reader = _zstd_reader()
        if reader is None:
            raise BuildError(
                f"{what} is compressed with zstd, which needs the `zstandard` package to read: "
                "pip install zstandard, or build this image with the engine"
            )
        return reader
    if media.endswith(".tar"):
        return lambda raw: raw
    raise BuildError(f"{what} is not a layer tarball (tar, tar+gzip or tar+zstd); build this image with the engine")


def _zstd_reader() -> Unpack | None:
    """A zstd stream reader: the standard library's (3.14), else the `zstandard` package's."""
    with contextlib.suppress(ImportError):
        std: Any = importlib.import_module("compression.zstd")
        return std.ZstdFile  # type: ignore[no-any-return]
    with contextlib.suppress(ImportError):
        package: Any = importlib.import_module("zstandard")
        return lambda raw: package.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return None


def _scan(raw: io.BufferedIOBase, unpack: Unpack, interest: frozenset[str], wanted: frozenset[str], what: str) -> Seen:
    entries: dict[str, Entry] = {}
    links: dict[str, str] = {}
    big: dict[str, int] = {}
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    try:
        stream = unpack(raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = normalize(member.name)
                head, base = posixpath.split(name)
                if base.startswith(WHITEOUT):  # `.wh..wh.` names other than the opaque marker are aufs' own
                    if base == OPAQUE and head in interest:
                        opaque.add(head)
                    elif not base.startswith(WHITEOUT * 2) and posixpath.join(head, base[4:]) in interest:
                        whiteouts.add(posixpath.join(head, base[4:]))
                    continue
                if name not in interest:
                    continue
                links.pop(name, None)
                big.pop(name, None)
                content = None
                if member.islnk():
                    links[name] = normalize(member.linkname)
                elif member.isreg() and name in wanted:
                    if member.size > MAX_CONTENT:
                        big[name] = member.size
                    else:
                        content = tar.extractfile(member).read()  # type: ignore[union-attr]
                entries[name] = _entry(name, member, content)
        for rest in (stream, raw):  # to the end (tar padding, gzip trailer), so the digest is checked
            while rest.read(CHUNK):
                pass
    except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError) as exc:
        raise RegistryError(f"{what} is not a readable layer tarball ({type(exc).__name__}: {exc})") from None
    return Seen(entries, links, big, frozenset(whiteouts), frozenset(opaque))


def _entry(name: str, member: tarfile.TarInfo, content: bytes | None) -> Entry:
    kind: Kind = "file" if member.isreg() or member.islnk() else "other"
    if member.isdir() or member.issym():
        kind = "dir" if member.isdir() else "symlink"
    link = member.linkname if member.issym() else ""
    return Entry(name, kind, member.mode & 0o7777, member.uid, member.gid, int(member.mtime), link, content)


class _Chunks(io.RawIOBase):
    """A blob's chunks, arriving on the event loop, as a file the worker thread reads: one chunk
    at a time is held, so memory stays flat for a layer of any size."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._chunks, self._loop = chunks, loop
        self._rest = memoryview(b"")
        self._ended = self._stopped = False
        self._task: asyncio.Task[bytes | None] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._rest and not self._ended:
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            self._ended = chunk is None
            self._rest = memoryview(chunk or b"")
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._rest))
        view[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count

    async def _next(self) -> bytes | None:
        """The next chunk (None at the end), run on the loop for the worker."""
        if self._stopped:
            return None
        self._task = asyncio.current_task()
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def stop(self) -> None:
        """End the worker's reading and wait out a chunk it is being sent, so the blob's
        iterator is idle when it is closed (closing one that runs is an error)."""
        self._stopped = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
