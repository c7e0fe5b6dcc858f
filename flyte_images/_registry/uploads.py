"""The reads and writes of `Registry` that appending without an engine needs: manifests and
configs, layers as streams (they can be gigabytes), blob uploads (POST, then one PUT of bytes or
a `Chunked` source read as it is sent; never of a blob the registry has) and manifest uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
import urllib.parse
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import httpx

from .._errors import RegistryError
from . import documents, wire
from .reference import Reference
from .session import Answer, Body, Session, describe, raw_chunks
from .transport import Chunked, InvalidURL, TransportError, join, origin

BLOB_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Fetched:
    """A document read from a registry: its bytes, media type and digest."""

    content: bytes
    media_type: str
    digest: str


class Uploads(Session):
    """Reading and writing one image's parts."""

    async def manifest(self, ref: Reference) -> Fetched:
        """The manifest (or index) `ref` names, checked against its digest. One named by digest
        is read from the registry once, then from disk (`documents`)."""
        kept = documents.get(ref.tag) if ref.by_digest else None
        if kept is not None:
            return Fetched(kept[0], kept[1], ref.tag)
        answer = await self._read_manifest(ref, "GET", "the manifest")
        if answer is None:
            raise RegistryError(f"{ref.host} has no {ref.repository}:{ref.tag}; push the base image there first")
        fetched = Fetched(
            answer.content, self._media(ref, answer), self._digest(ref, answer) or wire.sha256(answer.content)
        )
        if ref.by_digest:
            documents.put(fetched.digest, fetched.content, fetched.media_type)
        return fetched

    async def _read_manifest(self, ref: Reference, method: str, what: str = "") -> Answer | None:
        """The registry's 200 answer for `ref`'s manifest (or index), None for 404; a
        RegistryError for any other answer, and for a 200 that is not a manifest or index."""
        answer = await self.send(ref, method, self._url(ref, "manifests", ref.tag), limit=wire.MAX_MANIFEST)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._refused(ref, answer, what)
        if answer.media_type not in wire.ACCEPTED_TYPES:
            shown = answer.media_type or "none"
            raise RegistryError(
                f"{ref.host} answered 200 for {ref} with Content-Type {shown!r}, not an image manifest or "
                f"index; check that {ref.host} is a registry and not a login page or proxy"
            )
        return answer

    def _digest(self, ref: Reference, answer: Answer) -> str | None:
        """The manifest's digest, checked against the body when there is one (a GET): the
        platform cache is keyed by it and must never hold another document's platforms."""
        header = answer.headers.get("Docker-Content-Digest")
        if header is not None and not wire.is_digest(header):
            raise RegistryError(f"{ref.host} answered a Docker-Content-Digest that is not a digest for {ref}")
        expected = header or (ref.tag if ref.by_digest else None)
        if answer.content and expected and not wire.matches(expected, answer.content):
            raise RegistryError(
                f"the manifest {ref.host} answered for {ref} does not match its digest {expected}; a proxy on the "
                "way may have changed it"
            )
        return expected

    @staticmethod
    def _media(ref: Reference, answer: Answer) -> str:
        """The media type a manifest or index says it has, else the one it was served as."""
        return wire.parse(wire.Envelope, answer.content, f"the manifest of {ref}").media_type or answer.media_type

    async def blob(self, ref: Reference, digest: str) -> bytes:
        """A small blob (an image config), checked against its digest; read once, then kept."""
        kept = documents.get(digest)
        if kept is not None:
            return kept[0]
        content = await self._small_blob(ref, digest, f"the blob {digest}")
        documents.put(digest, content, BLOB_TYPE)
        return content

    async def _small_blob(self, ref: Reference, digest: str, what: str) -> bytes:
        answer = await self.send(ref, "GET", self._url(ref, "blobs", digest), limit=wire.MAX_BLOB)
        if answer.status != 200:
            raise self._refused(ref, answer, what)
        if not wire.matches(digest, answer.content):
            raise RegistryError(f"{what} of {ref} does not match its digest {digest}")
        return answer.content

    async def blob_chunks(self, ref: Reference, digest: str, size: int | None = None) -> AsyncGenerator[bytes, None]:
        """The blob `digest` in chunks as they arrive. Read to the end, it is checked against its
        digest (and `size`) before the end is reported; close the iterator when stopping early."""
        algorithm, _, expected = digest.partition(":")
        if algorithm not in ("sha256", "sha512"):
            raise RegistryError(f"the blob {digest[:80]!r} of {ref} names a digest that cannot be checked here")
        what = f"the blob {digest}"
        answer = await self.send(ref, "GET", self._url(ref, "blobs", digest), limit=wire.MAX_MANIFEST, hold=True)
        if answer.stream is None:
            raise self._refused(ref, answer, what)
        hasher, seen = hashlib.new(algorithm), 0
        try:
            async for chunk in raw_chunks(answer.stream, self._deadline):
                hasher.update(chunk)
                seen += len(chunk)
                if size is not None and seen > size:
                    raise RegistryError(f"{ref.host} sent more than the {size} bytes of {what} of {ref}")
                yield chunk
        except (TransportError, InvalidURL) as exc:
            raise RegistryError(self._redact(f"{ref.host} broke off {what} of {ref}: {describe(exc)}")) from None
        finally:
            await answer.stream.aclose()
        if hasher.hexdigest() != expected or (size is not None and seen != size):
            raise RegistryError(
                f"{what} of {ref} does not match its digest (or its size); the registry sent other data"
            )

    async def has_blob(self, ref: Reference, digest: str) -> bool:
        answer = await self.send(ref, "HEAD", self._url(ref, "blobs", digest), limit=wire.MAX_MANIFEST)
        if answer.status in (200, 404):
            return answer.status == 200
        raise self._refused(ref, answer, f"the blob {digest}")

    async def push_blob(self, ref: Reference, body: bytes | Chunked, digest: str, *, ask: bool = True) -> bool:
        """Upload `body` (bytes, or a `Chunked` source such as a spooled layer) as `digest` unless
        the repository has it (`ask=False`: without asking); True when it was sent. The upload
        is started while the registry is asked, saving a round trip for a new blob (the usual
        case); it is cancelled when the blob is there after all."""
        start = f"{self.base(ref.host)}/{ref.repository}/blobs/uploads/"
        starting = asyncio.ensure_future(self.send(ref, "POST", start, limit=wire.MAX_MANIFEST, push=True))
        try:
            there = await self.has_blob(ref, digest) if ask else False
        except BaseException:
            starting.cancel()
            # It may end in a failure all the same (of the same registry, already being
            # reported): taken when it ends, or the event loop would log it when it is collected.
            starting.add_done_callback(lambda task: task.cancelled() or task.exception())
            raise
        if there:
            await self._cancel_upload(ref, await starting)
            return False
        target = self._upload_location(ref, await starting)
        put = target.copy_set_param("digest", digest)
        # Bounded by the per-phase limits only: an upload fails when it stalls, never for its length.
        answer = await self.send(
            ref, "PUT", str(put), limit=wire.MAX_MANIFEST, body=Body(body, BLOB_TYPE), bounded=False
        )
        if answer.status not in (201, 204):
            raise self._refused(ref, answer, f"the upload of {digest}", push=True)
        return True

    async def _cancel_upload(self, ref: Reference, started: Answer) -> None:
        """Cancel the upload `started` answered, best effort: registries also drop unfinished
        uploads after a while."""
        with contextlib.suppress(RegistryError, InvalidURL):
            target = self._upload_location(ref, started)
            await self.send(ref, "DELETE", str(target), limit=wire.MAX_MANIFEST, push=True)

    def _upload_location(self, ref: Reference, answer: Answer) -> httpx.URL:
        location = answer.headers.get("Location")
        if answer.status != 202 or not location:
            raise self._refused(ref, answer, "starting a blob upload", push=True)
        try:
            target = join(answer.url, location)
        except InvalidURL:
            raise RegistryError(f"{ref.host} answered an upload location that is not a URL") from None
        if origin(target) != origin(answer.url):
            # The session sends the registry's Authorization to the URL it is given; an upload
            # location elsewhere (a bucket) must not receive it.
            raise RegistryError(
                f"{ref.host} asked for the upload at another host ({target.host}); uploads outside the registry's "
                "own address are not supported yet: build with the engine instead"
            )
        return target

    async def copy(self, source: Reference, targets: Sequence[Reference]) -> str:
        """Make each of `targets` name the image (manifest or index) `source` names: its blobs
        copied where the target's repository lacks them (mounted from `source`'s repository on
        the same registry, else streamed through a temporary file), then the same manifest bytes
        PUT, so every target has `source`'s digest; return that digest."""
        fetched = await self.manifest(source)
        for target in targets:
            await self._copy_parts(source, target, fetched)
            await self.put_manifest(target, fetched.content, fetched.media_type)
        return fetched.digest

    async def _copy_parts(self, source: Reference, target: Reference, fetched: Fetched) -> None:
        if (source.host, source.repository) == (target.host, target.repository):
            return
        document = json.loads(fetched.content)
        if fetched.media_type in wire.INDEX_TYPES:
            for child in document.get("manifests") or []:
                digest = str(child["digest"])
                part = await self.manifest(Reference(source.host, source.repository, digest))
                await self._copy_parts(source, target, part)
                await self.put_manifest(
                    Reference(target.host, target.repository, digest), part.content, part.media_type
                )
            return
        for descriptor in [document["config"], *(document.get("layers") or [])]:
            await self._copy_blob(source, target, str(descriptor["digest"]), int(descriptor["size"]))

    async def _copy_blob(self, source: Reference, target: Reference, digest: str, size: int) -> None:
        if await self.has_blob(target, digest):
            return
        if source.host == target.host:
            query = urllib.parse.urlencode({"mount": digest, "from": source.repository})
            url = f"{self.base(target.host)}/{target.repository}/blobs/uploads/?{query}"
            answer = await self.send(target, "POST", url, limit=wire.MAX_MANIFEST, push=True)
            if answer.status == 201:
                return
            if answer.status == 202:  # an upload was started instead of the mount
                await self._cancel_upload(target, answer)
        with tempfile.TemporaryFile() as spool:
            async for chunk in self.blob_chunks(source, digest, size):
                spool.write(chunk)
            await self.push_blob(target, _Spooled(spool, size), digest, ask=False)

    async def put_manifest(self, ref: Reference, document: dict[str, Any] | bytes, media_type: str) -> str:
        """PUT a manifest (or index) under `ref`; return its digest (checked against what was stored)."""
        content = document if isinstance(document, bytes) else wire.dumps(document)
        what = "index" if media_type in wire.INDEX_TYPES else "manifest"
        body = Body(content, media_type)
        answer = await self.send(ref, "PUT", self._url(ref, "manifests", ref.tag), limit=wire.MAX_MANIFEST, body=body)
        if answer.status not in (200, 201):
            raise self._refused(ref, answer, f"the {what}", push=True)
        digest = wire.sha256(content)
        stored = answer.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise RegistryError(
                f"{ref.host} stored the {what} of {ref} as {stored[:80]!r}, not as the {digest} it was sent; a proxy "
                "on the way may have changed it"
            )
        return digest


class _Spooled:
    """A blob read into a temporary file, sent as a `Chunked` body."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self.file, self.size = file, size

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(1 << 20):
            yield chunk
