"""The reads and writes of `Registry` that images assembled without a build engine need
(`flyte_images._append`): an image's manifest and config, its layers as streams, and blob and
manifest uploads.

A blob is uploaded in one request (POST for an upload location, then PUT with the digest), its
body either bytes or read from a `Chunked` source as it is sent, so a layer of any size costs
the memory of a chunk; a registry that already has a blob is never sent it again (HEAD first).
The base image's layers are read as a stream (`blob_chunks`): they can be gigabytes, and a
reader often needs only their first part.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from .._errors import RegistryError
from . import documents, wire
from .connection import Connection
from .reference import Reference
from .session import Answer, Body, describe
from .transport import Chunked, InvalidURL, TransportError

BLOB_TYPE = "application/octet-stream"
VERIFIABLE = ("sha256", "sha512")


@dataclass(frozen=True)
class Fetched:
    """A document read from a registry: its bytes, media type and digest."""

    content: bytes
    media_type: str
    digest: str


class Uploads(Connection):
    """Reading and writing one image's parts."""

    async def manifest(self, ref: Reference) -> Fetched:
        """The manifest (or index) `ref` names, checked against its digest. One named by digest
        is read from the registry once, then from disk (`documents`)."""
        if ref.by_digest:
            kept = documents.get(ref.tag)
            if kept is not None:
                return Fetched(kept[0], kept[1], ref.tag)
        fetched = await self._fetch_manifest(ref)
        if ref.by_digest:
            documents.put(fetched.digest, fetched.content, fetched.media_type)
        return fetched

    async def _fetch_manifest(self, ref: Reference) -> Fetched:
        answer = await self._send(ref, "GET", self._url(ref, "manifests", ref.tag), limit=wire.MAX_MANIFEST)
        if answer.status == 404:
            raise RegistryError(f"{ref.host} has no {ref.repository}:{ref.tag}; push the base image there first")
        if answer.status != 200:
            raise self._refused(ref, answer, "the manifest")
        digest = wire.sha256(answer.content)
        stated = answer.headers.get("Docker-Content-Digest") or (ref.tag if ref.by_digest else None)
        if stated is not None and stated != digest:
            raise RegistryError(f"the manifest of {ref} does not match its digest {stated[:80]!r}")
        media = wire.parse(wire.Envelope, answer.content, f"the manifest of {ref}").media_type or answer.media_type
        return Fetched(answer.content, media, digest)

    async def blob(self, ref: Reference, digest: str) -> bytes:
        """A small blob (an image config), checked against its digest; read once, then kept."""
        kept = documents.get(digest)
        if kept is not None:
            return kept[0]
        answer = await self._send(ref, "GET", self._url(ref, "blobs", digest), limit=wire.MAX_BLOB)
        if answer.status != 200:
            raise self._refused(ref, answer, f"the blob {digest}")
        if not wire.matches(digest, answer.content):
            raise RegistryError(f"the blob {digest} of {ref} does not match its digest")
        documents.put(digest, answer.content, BLOB_TYPE)
        return answer.content

    async def blob_chunks(self, ref: Reference, digest: str, size: int | None = None) -> AsyncGenerator[bytes, None]:
        """The blob `digest` of `ref`'s repository in chunks as they arrive, so a layer of any size
        is read in constant memory. Read to the end, it is checked against its digest (and
        `size`, when given) before the end is reported; a reader that stops early has not
        checked it. Close the iterator (`contextlib.aclosing`) when stopping early."""
        algorithm, _, expected = digest.partition(":")
        if algorithm not in VERIFIABLE:
            raise RegistryError(f"the blob {digest[:80]!r} of {ref} names a digest that cannot be checked here")
        what = f"the blob {digest}"
        answer = await self._send(ref, "GET", self._url(ref, "blobs", digest), limit=wire.MAX_MANIFEST, hold=True)
        if answer.stream is None:
            raise self._refused(ref, answer, what)
        hasher, seen = hashlib.new(algorithm), 0
        try:
            async for chunk in answer.stream.aiter_bytes():
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
        answer = await self._send(ref, "HEAD", self._url(ref, "blobs", digest), limit=wire.MAX_MANIFEST)
        if answer.status in (200, 404):
            return answer.status == 200
        raise self._refused(ref, answer, f"the blob {digest}")

    async def push_blob(self, ref: Reference, body: bytes | Chunked, digest: str, *, ask: bool = True) -> bool:
        """Upload `body` as `digest` unless the repository has it; True when it was sent.

        `body` is the blob's bytes, or a `Chunked` source (a spooled layer): its chunks are read
        off the event loop as they are sent, from the start again whenever the request is sent
        again (a redirect, a challenge answered), so only a chunk at a time is held.

        The upload is started while the registry is asked whether it has the blob: an appended
        layer or config is new nearly always, and this saves a round trip for it. When the blob
        is there after all, the started upload is cancelled. `ask=False` sends it without
        asking (a small blob that cannot be there yet: uploading one again is harmless)."""
        start = f"{self._session.base(ref.host)}/{ref.repository}/blobs/uploads/"
        starting = asyncio.ensure_future(self._send(ref, "POST", start, limit=wire.MAX_MANIFEST, push=True))
        try:
            there = await self.has_blob(ref, digest) if ask else False
        except BaseException:
            starting.cancel()
            # It may end in a failure all the same (of the same registry, already being
            # reported): taken when it ends, or the event loop would log it when it is collected.
            starting.add_done_callback(_taken)
            raise
        if there:
            await self._cancel_upload(ref, starting)
            return False
        answer = await starting
        location = answer.headers.get("Location")
        if answer.status != 202 or not location:
            raise self._refused(ref, answer, "starting a blob upload", push=True)
        try:
            target = answer.url.join(location)
        except InvalidURL:
            raise RegistryError(f"{ref.host} answered an upload location that is not a URL") from None
        if target.origin != answer.url.origin:
            # The session sends the registry's Authorization to the URL it is given; an upload
            # location elsewhere (a bucket) must not receive it.
            raise RegistryError(
                f"{ref.host} asked for the upload at another host ({target.host}); uploads outside the registry's "
                "own address are not supported yet: build with the engine instead"
            )
        put = target.with_params({"digest": digest})
        # Bounded by the per-phase limits only: an upload fails when it stalls, never for its length.
        answer = await self._send(
            ref, "PUT", str(put), limit=wire.MAX_MANIFEST, body=Body(body, BLOB_TYPE), bounded=False
        )
        if answer.status not in (201, 204):
            raise self._refused(ref, answer, f"the upload of {digest}", push=True)
        return True

    async def _cancel_upload(self, ref: Reference, starting: asyncio.Future[Answer]) -> None:
        """Cancel an upload that turned out not to be needed (best effort: registries also
        drop unfinished uploads after a while)."""
        with contextlib.suppress(RegistryError, InvalidURL):
            answer = await starting
            location = answer.headers.get("Location")
            if answer.status == 202 and location:
                target = answer.url.join(location)
                if target.origin == answer.url.origin:
                    await self._send(ref, "DELETE", str(target), limit=wire.MAX_MANIFEST, push=True)

    async def put_manifest(self, ref: Reference, document: dict[str, Any] | bytes, media_type: str) -> str:
        """PUT a manifest under `ref`; return its digest (checked against what was stored)."""
        content = document if isinstance(document, bytes) else _json(document)
        url = self._url(ref, "manifests", ref.tag)
        answer = await self._send(ref, "PUT", url, limit=wire.MAX_MANIFEST, body=Body(content, media_type))
        if answer.status not in (200, 201):
            raise self._refused(ref, answer, "the manifest", push=True)
        digest = wire.sha256(content)
        stored = answer.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise RegistryError(f"{ref.host} stored the manifest of {ref} as {stored[:80]!r}, not as {digest}")
        return digest


def _taken(task: asyncio.Future[Answer]) -> None:
    if not task.cancelled():
        task.exception()


def _json(document: dict[str, Any]) -> bytes:
    # Compact and key-ordered: the same document always gives the same digest.
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
