"""The existence checks of `Registry`, and the multi-platform index made of per-platform pushes.

"exists": a 200 with a manifest or index media type that covers every platform asked for (an
index is read, else the manifest's config blob); "missing": 404 or a platform lacking;
"unknown": whatever cannot be trusted (unreachable, 5xx or 429 after retries, 401 without usable
credentials, a page or document that is not a manifest, no answer within the deadline), never
to be taken as "exists". One image's unknown never stops the others' checks, and a check's
deadline runs from when it starts, not while it waits behind `concurrency` others.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._errors import RegistryError
from . import redact, wire
from .index import INDEX_MEDIA_TYPE, PlatformImage, index_document, platform_tag
from .reference import Reference, parse_reference
from .session import Answer, describe
from .uploads import Uploads
from .wire import INDEX_TYPES, MANIFEST_TYPES, normalize_platform

HINT_SECONDS = 5.0  # at most this long spent finding out why a multi-platform tag is missing
HINT_MARGIN = 1.0  # and it ends this long before the check's deadline


@dataclass(frozen=True)
class Existence:
    reference: str
    state: Literal["exists", "missing", "unknown"]
    digest: str | None = None
    platforms: tuple[str, ...] = ()
    reason: str = ""

    @property
    def exists(self) -> bool:
        return self.state == "exists"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "platforms": list(self.platforms)}


class Checks(Uploads):
    """Whether images exist, with which platforms; per-platform images made one by an index."""

    async def check(self, reference: str, platforms: Sequence[str] | None = None, *, hint: bool = True) -> Existence:
        """Whether `reference` exists (with every platform in `platforms`, when given). With
        `hint`, a missing multi-platform tag's reason says which platforms were pushed alone (one
        more round of requests). Never raises: what goes wrong is an "unknown" with a reason."""
        try:
            ref = parse_reference(reference)
        except RegistryError as exc:
            return self._unknown(reference, str(exc))
        async with self._limit:
            until = asyncio.get_running_loop().time() + self._deadline
            try:
                return await self._guarded(ref, self._check(reference, ref, tuple(platforms or ()), until, hint))
            except RegistryError as exc:
                return self._unknown(reference, str(exc))
            except Exception as exc:  # the contract is "unknown", never a crash of the whole batch
                return self._unknown(reference, f"checking {ref} failed unexpectedly ({describe(exc)}); please report")

    def _unknown(self, reference: str, reason: str) -> Existence:
        return Existence(redact.reference(self._redact(reference)), "unknown", reason=self._redact(reason))

    async def _check(
        self, reference: str, ref: Reference, platforms: tuple[str, ...], until: float, hint: bool
    ) -> Existence:
        answer = await self._read_manifest(ref, "GET" if platforms else "HEAD")
        if answer is None:
            reason = f"{ref.host} has no {ref.repository}:{ref.tag}"
            if hint and len(platforms) > 1 and not ref.by_digest:
                reason += await self._partial_hint(ref, platforms, until)
            return Existence(reference, "missing", reason=reason)
        digest = self._digest(ref, answer)
        if not platforms:
            return Existence(reference, "exists", digest=digest)
        digest = digest or wire.sha256(answer.content)
        found, unlabelled = self._platform_cache.get(digest), 0
        if found is None:
            found, unlabelled = await self._platforms(ref, answer)
            if not unlabelled:
                self._platform_cache.put(digest, found)
        # Compared as containerd does: an index saying linux/arm64/v8 has linux/arm64.
        have = {normalize_platform(p) for p in found}
        lacking = [p for p in platforms if normalize_platform(p) not in have]
        if lacking and unlabelled:
            raise RegistryError(
                f"the index of {ref} has {unlabelled} entries without a platform, so it cannot tell whether it "
                f"has {', '.join(lacking)}"
            )
        if lacking:
            reason = f"exists for {', '.join(found) or 'no known platform'}, not for {', '.join(lacking)}"
            return Existence(reference, "missing", digest=digest, platforms=found, reason=reason)
        return Existence(reference, "exists", digest=digest, platforms=found)

    async def _platforms(self, ref: Reference, answer: Answer) -> tuple[tuple[str, ...], int]:
        """The platforms a manifest or index names, and how many index entries name none."""
        what = f"the manifest of {ref}"
        media = self._media(ref, answer)
        if media in INDEX_TYPES:
            index = wire.parse(wire.Index, answer.content, what)
            named = sorted({str(m.platform) for m in index.manifests if m.platform is not None})
            return tuple(named), sum(1 for m in index.manifests if m.platform is None)
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"{what} says its mediaType is {media[:60]!r}, not an image manifest or index")
        manifest = wire.parse(wire.Manifest, answer.content, what)
        blob = await self._small_blob(ref, manifest.config.digest, "the config blob")
        return (wire.parse(wire.ImageConfig, blob, f"the config blob of {ref}").platform,), 0

    async def _partial_hint(self, ref: Reference, platforms: tuple[str, ...], until: float) -> str:
        """Why a multi-platform tag is missing when its per-platform images are there (a build
        cut short before its index). Best effort, ending well before the check's deadline."""
        budget = min(HINT_SECONDS, until - asyncio.get_running_loop().time() - HINT_MARGIN)
        if budget <= 0:
            return ""

        async def pushed(platform: str) -> bool:
            url = self._url(ref, "manifests", platform_tag(ref.tag, platform))
            return (await self.send(ref, "HEAD", url, limit=wire.MAX_MANIFEST)).status == 200

        try:
            found = await asyncio.wait_for(asyncio.gather(*(pushed(p) for p in platforms)), budget)
        except Exception:  # a hint, never a reason to change the answer
            return ""
        done = [p for p, there in zip(platforms, found, strict=True) if there]
        if not done:
            return ""
        return (
            f"; only per-platform images were pushed ({', '.join(done)}), not the index that makes them one "
            "image (a multi-platform build was cut short): building it again completes it"
        )

    # ----- multi-platform images assembled from per-platform pushes (index.py) ---------------

    async def platform_image(self, reference: str, platform: str) -> PlatformImage | None:
        """The image `reference` holds for `platform` (its manifest's digest, size, media type and
        labels), or None when there is no such tag; RegistryError when it is for another platform."""
        ref = parse_reference(reference)
        return await self._guarded(ref, self._platform_image(ref, platform, nested=False))

    async def push_index(self, reference: str, parts: Mapping[str, str]) -> str:
        """PUT an OCI image index under `reference` listing `parts` (platform -> reference of its
        pushed image, in the same repository); return its digest. See index.py."""
        ref = parse_reference(reference)
        if ref.by_digest or not parts:
            what = "names a digest" if ref.by_digest else "has no platforms to list"
            raise RegistryError(f"cannot write an index under {ref}: it {what}; give a tag and at least one platform")
        children = {platform: parse_reference(child) for platform, child in parts.items()}
        for child in children.values():
            if (child.host, child.repository) != (ref.host, ref.repository):
                raise RegistryError(
                    f"{child} is not in {ref.host}/{ref.repository}; an index can only list manifests of its own "
                    "repository, so push each platform there first"
                )
        return await self._guarded(ref, self._push_index(ref, children))

    async def _platform_image(self, ref: Reference, platform: str, *, nested: bool) -> PlatformImage | None:
        answer = await self._read_manifest(ref, "GET")
        if answer is None:
            return None
        digest = self._digest(ref, answer) or wire.sha256(answer.content)
        what = f"the manifest of {ref}"
        media = self._media(ref, answer)
        if media in INDEX_TYPES and not nested:
            # One platform pushed as an index (BuildKit adds attestations that way): its entry.
            wanted = normalize_platform(platform)
            index = wire.parse(wire.Index, answer.content, what)
            for entry in index.manifests:
                if entry.platform is not None and normalize_platform(str(entry.platform)) == wanted:
                    return await self._platform_image(
                        Reference(ref.host, ref.repository, entry.digest), platform, nested=True
                    )
            raise RegistryError(f"{ref} is an index without {platform}")
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"{what} is a {media[:60]!r}, not an image manifest for {platform}")
        manifest = wire.parse(wire.Manifest, answer.content, what)
        blob = await self._small_blob(ref, manifest.config.digest, "the config blob")
        config = wire.parse(wire.LabelledConfig, blob, f"the config blob of {ref}")
        if normalize_platform(config.platform) != normalize_platform(platform):
            raise RegistryError(f"{ref} is an image for {config.platform}, not for {platform}; it cannot stand for it")
        return PlatformImage(str(ref), platform, media, digest, len(answer.content), config.labels)

    async def _push_index(self, ref: Reference, children: Mapping[str, Reference]) -> str:
        async def read(platform: str, child: Reference) -> PlatformImage:
            found = await self._platform_image(child, platform, nested=False)
            if found is None:
                raise RegistryError(f"{child} is not in the registry, so the index {ref} cannot list {platform}")
            return found

        images = await asyncio.gather(*(read(p, c) for p, c in children.items()))
        digest = await self.put_manifest(ref, index_document(images), INDEX_MEDIA_TYPE)
        self._platform_cache.put(digest, sorted(image.platform for image in images))
        return digest
