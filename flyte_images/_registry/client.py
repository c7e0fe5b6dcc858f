"""Existence checks against any OCI distribution registry, over HTTP/1.1 with kept-alive connections.

An answer is one of three states, and only a registry that answered 200 with a manifest or
index media type yields "exists":

- exists: the manifest is there (with its digest) and, when platforms were asked for, it
  covers every one of them (an index is read; a single manifest's config blob is read);
- missing: 404, or the manifest lacks a requested platform;
- unknown: the registry could not be asked or gave an answer that cannot be trusted
  (unreachable, 5xx or 429 after retries, 401 with no usable credentials, a page that is not a
  manifest, a malformed document, no answer within the deadline). Callers must never treat it
  as "exists". One image's unknown never stops the check of the others.

Every check has an overall deadline (`deadline=`, else FLYTE_IMAGES_REGISTRY_TIMEOUT, else
20 s; transport.py says how it applies), so a server that drips bytes cannot hold a build. It
runs from when the check starts, not while it waits behind `concurrency` others.
Plain HTTP is used only for hosts configured as insecure (`insecure_registries`,
FLYTE_IMAGES_INSECURE_REGISTRIES) and for loopback hosts, which Docker also treats as insecure;
HTTPS everywhere else. Credentials never appear in reasons, logs or errors (see redact.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .._errors import RegistryError
from . import redact, wire
from .index import INDEX_MEDIA_TYPE, PlatformImage, index_document, platform_tag
from .record import PlatformCache
from .session import Answer, Body, Session, describe, is_loopback
from .transport import (
    DEADLINE_ENV,
    DEFAULT_DEADLINE,
    URL,
    HTTPTransport,
    InvalidURL,
    TransportError,
    deadline_seconds,
)
from .wire import ACCEPT, INDEX_TYPES, MANIFEST_TYPES, normalize_platform

__all__ = [
    "ACCEPT",
    "DEADLINE_ENV",
    "DEFAULT_DEADLINE",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "Existence",
    "Reference",
    "RegistryClient",
    "check_many",
    "is_loopback",
    "parse_reference",
    "to_json",
]

HINT_SECONDS = 5.0  # at most this long spent finding out why a multi-platform tag is missing
HINT_MARGIN = 1.0  # and it ends this long before the check's deadline
_DIGEST_REF = re.compile(r"[a-z0-9]+:[0-9a-f]{32,}")


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}{'@' if self.by_digest else ':'}{self.tag}"

    @property
    def by_digest(self) -> bool:
        return _DIGEST_REF.fullmatch(self.tag) is not None


def parse_reference(ref: str) -> Reference:
    """`host[:port]/repo[/...]:tag` (or `@sha256:...`); Docker Hub names are expanded."""
    name, at, digest = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if "://" in ref or (at and (not _DIGEST_REF.fullmatch(digest) or "@" in name)):
        raise RegistryError(
            f"{redact.reference(ref)!r} is not an image reference: write registry.example/team/app:tag, with no "
            "scheme and no credentials (log in with `docker login HOST` instead)"
        )
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:  # with a digest too (`app:1@sha256:...`), the digest names the manifest
        name, tag = name[:colon], digest or name[colon + 1 :]
    else:
        tag = digest or "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "registry-1.docker.io", name if rest else f"library/{name}"
    valid_tag = _DIGEST_REF.fullmatch(tag) or re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag)
    if not valid_tag or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:__[a-z0-9]+)*", repository):
        raise RegistryError(f"{redact.reference(ref)!r} is not an image reference like registry.example/team/app:tag")
    return Reference(host, repository, tag)


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
        return {
            "reference": self.reference,
            "state": self.state,
            "digest": self.digest,
            "platforms": list(self.platforms),
            "reason": self.reason,
        }


T = TypeVar("T")


class RegistryClient:
    """Checks many references concurrently, sharing connections, credentials and tokens."""

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        concurrency: int = 16,
        retries: int = 4,
        backoff: float = 0.2,
        transport: HTTPTransport | None = None,
        platform_cache: PlatformCache | None = None,
        deadline: float | None = None,
        session: Session | None = None,
    ) -> None:
        self._deadline = deadline_seconds(deadline)
        self._platform_cache = platform_cache if platform_cache is not None else PlatformCache.default()
        self._limit = asyncio.Semaphore(concurrency)
        # A session handed in (shared with a Pusher) stays open: its owner closes it.
        self._owns = session is None
        self._session = session or Session(
            insecure=insecure,
            retries=retries,
            backoff=backoff,
            timeout=self._deadline,
            keep=concurrency,
            transport=transport,
        )
        self._redact = self._session.redact

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._owns:
            await self._session.aclose()
        self._platform_cache.save()

    async def check(self, reference: str, platforms: Sequence[str] | None = None, *, hint: bool = True) -> Existence:
        """Whether `reference` exists (with every platform in `platforms`, when given). With
        `hint`, a missing multi-platform tag's reason says which platforms were pushed alone (one
        more round of requests; a caller that builds it anyway has no use for it).

        Never raises for what a registry answers: anything that goes wrong is this reference's
        "unknown", with a reason, so the other checks of a batch carry on."""
        try:
            ref = parse_reference(reference)
        except RegistryError as exc:
            return self._unknown(reference, str(exc))
        async with self._limit:
            try:
                until = asyncio.get_running_loop().time() + self._deadline
                work = self._check(reference, ref, tuple(platforms or ()), until, hint)
                return await asyncio.wait_for(work, self._deadline)
            except asyncio.TimeoutError:
                why = f"{ref.host} timed out after {self._deadline:g} s for {ref}"
                return self._unknown(reference, f"{why}; set {DEADLINE_ENV} to allow longer")
            except RegistryError as exc:
                return self._unknown(reference, str(exc))
            except (TransportError, InvalidURL) as exc:
                return self._unknown(reference, f"{ref.host} could not be asked about {ref}: {describe(exc)}")
            except Exception as exc:  # the contract is "unknown", never a crash of the whole batch
                return self._unknown(reference, f"checking {ref} failed unexpectedly ({describe(exc)}); please report")

    def _unknown(self, reference: str, reason: str) -> Existence:
        return Existence(redact.reference(self._redact(reference)), "unknown", reason=self._redact(reason))

    async def _check(
        self, reference: str, ref: Reference, platforms: tuple[str, ...], until: float, hint: bool
    ) -> Existence:
        url = f"{self._session.base(ref.host)}/{ref.repository}/manifests/{ref.tag}"
        method = "GET" if platforms else "HEAD"
        answer = await self._session.get(ref.host, ref.repository, method, url, limit=wire.MAX_MANIFEST)
        if answer.status == 404:
            reason = f"{ref.host} has no {ref.repository}:{ref.tag}"
            if hint and len(platforms) > 1 and not ref.by_digest:
                reason += await self._partial_hint(ref, platforms, until)
            return Existence(reference, "missing", reason=reason)
        if answer.status != 200:
            raise RegistryError(self._failure(ref, answer))
        if answer.media_type not in wire.ACCEPTED_TYPES:
            shown = answer.media_type or "none"
            raise RegistryError(
                f"{ref.host} answered 200 for {ref} with Content-Type {shown!r}, not an image manifest or "
                f"index; check that {ref.host} is a registry and not a login page or proxy"
            )
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

    async def _platforms(self, ref: Reference, answer: Answer) -> tuple[tuple[str, ...], int]:
        """The platforms a manifest or index names, and how many index entries name none."""
        what = f"the manifest of {ref}"
        media = wire.parse(wire.Envelope, answer.content, what).media_type or answer.media_type
        if media in INDEX_TYPES:
            index = wire.parse(wire.Index, answer.content, what)
            named = sorted({str(m.platform) for m in index.manifests if m.platform is not None})
            return tuple(named), sum(1 for m in index.manifests if m.platform is None)
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"{what} says its mediaType is {media[:60]!r}, not an image manifest or index")
        manifest = wire.parse(wire.Manifest, answer.content, what)
        return (await self._config_platform(ref, manifest.config),), 0

    async def _config_platform(self, ref: Reference, config: wire.Descriptor) -> str:
        return wire.parse(wire.ImageConfig, await self._config_blob(ref, config), f"the config blob of {ref}").platform

    async def _config_blob(self, ref: Reference, config: wire.Descriptor) -> bytes:
        url = f"{self._session.base(ref.host)}/{ref.repository}/blobs/{config.digest}"
        blob = await self._session.get(ref.host, ref.repository, "GET", url, limit=wire.MAX_BLOB)
        if blob.status != 200:
            raise RegistryError(f"cannot read the config blob of {ref}: {self._failure(ref, blob)}")
        if not wire.matches(config.digest, blob.content):
            raise RegistryError(f"the config blob of {ref} does not match its digest {config.digest}")
        return blob.content

    async def _partial_hint(self, ref: Reference, platforms: tuple[str, ...], until: float) -> str:
        """Why a multi-platform tag is missing when its per-platform images are there: a build
        that pushed them but not yet the index (cut short). Best effort and brief: any failure
        here only leaves the hint out, and it stops well before the check's own deadline, so the
        answer stays "missing" either way."""
        budget = min(HINT_SECONDS, until - asyncio.get_running_loop().time() - HINT_MARGIN)
        if budget <= 0:
            return ""

        async def pushed(platform: str) -> bool:
            url = f"{self._session.base(ref.host)}/{ref.repository}/manifests/{platform_tag(ref.tag, platform)}"
            answer = await self._session.get(ref.host, ref.repository, "HEAD", url, limit=wire.MAX_MANIFEST)
            return answer.status == 200

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
        """The image `reference` holds for `platform` (its manifest's digest, size, media type
        and labels), or None when the registry has no such tag. Raises RegistryError when the
        registry cannot be asked, or when the image there is for another platform."""
        ref = parse_reference(reference)
        return await self._guarded(ref, self._platform_image(ref, platform, nested=False))

    async def push_index(self, reference: str, parts: Mapping[str, str]) -> str:
        """PUT an OCI image index under `reference` listing `parts` (platform -> reference of its
        pushed image, in the same repository); return its digest. See index.push_index."""
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

    async def _guarded(self, ref: Reference, work: Awaitable[T]) -> T:
        """`work` within the deadline, with every failure as a RegistryError free of secrets."""
        try:
            return await asyncio.wait_for(work, self._deadline)
        except asyncio.TimeoutError:
            why = f"{ref.host} timed out after {self._deadline:g} s for {ref}; set {DEADLINE_ENV} to allow longer"
        except RegistryError as exc:
            why = str(exc)
        except (TransportError, InvalidURL) as exc:
            why = f"{ref.host} could not be reached for {ref}: {describe(exc)}"
        raise RegistryError(self._redact(why))

    async def _platform_image(self, ref: Reference, platform: str, *, nested: bool) -> PlatformImage | None:
        url = f"{self._session.base(ref.host)}/{ref.repository}/manifests/{ref.tag}"
        answer = await self._session.get(ref.host, ref.repository, "GET", url, limit=wire.MAX_MANIFEST)
        if answer.status == 404:
            return None
        if answer.status != 200 or answer.media_type not in wire.ACCEPTED_TYPES:
            raise RegistryError(f"cannot read the manifest of {ref}: {self._failure(ref, answer)}")
        digest = self._digest(ref, answer) or wire.sha256(answer.content)
        what = f"the manifest of {ref}"
        media = wire.parse(wire.Envelope, answer.content, what).media_type or answer.media_type
        if media in INDEX_TYPES and not nested:
            # One platform pushed as an index (BuildKit adds attestations that way): its entry.
            entry = self._entry_for(ref, wire.parse(wire.Index, answer.content, what), platform)
            return await self._platform_image(Reference(ref.host, ref.repository, entry), platform, nested=True)
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"{what} is a {media[:60]!r}, not an image manifest for {platform}")
        manifest = wire.parse(wire.Manifest, answer.content, what)
        blob = await self._config_blob(ref, manifest.config)
        config = wire.parse(wire.LabelledConfig, blob, f"the config blob of {ref}")
        if normalize_platform(config.platform) != normalize_platform(platform):
            raise RegistryError(f"{ref} is an image for {config.platform}, not for {platform}; it cannot stand for it")
        return PlatformImage(str(ref), platform, media, digest, len(answer.content), config.labels)

    @staticmethod
    def _entry_for(ref: Reference, index: wire.Index, platform: str) -> str:
        wanted = normalize_platform(platform)
        for entry in index.manifests:
            if entry.platform is not None and normalize_platform(str(entry.platform)) == wanted:
                return entry.digest
        raise RegistryError(f"{ref} is an index without {platform}")

    async def _push_index(self, ref: Reference, children: Mapping[str, Reference]) -> str:
        async def read(platform: str, child: Reference) -> PlatformImage:
            found = await self._platform_image(child, platform, nested=False)
            if found is None:
                raise RegistryError(f"{child} is not in the registry, so the index {ref} cannot list {platform}")
            return found

        images = await asyncio.gather(*(read(p, c) for p, c in children.items()))
        document = index_document(images)
        url = f"{self._session.base(ref.host)}/{ref.repository}/manifests/{ref.tag}"
        body = Body(document, INDEX_MEDIA_TYPE)
        answer = await self._session.send(ref.host, ref.repository, "PUT", url, limit=wire.MAX_MANIFEST, body=body)
        if answer.status not in (200, 201):
            raise RegistryError(f"the index of {ref} was refused: {self._failure(ref, answer)}{_said(answer)}")
        digest = wire.sha256(document)
        stored = answer.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise RegistryError(
                f"{ref.host} stored the index of {ref} as {stored[:80]!r}, not as the {digest} it was sent; "
                "a proxy on the way may have changed it"
            )
        self._platform_cache.put(digest, sorted(image.platform for image in images))
        return digest

    def _failure(self, ref: Reference, answer: Answer) -> str:
        if answer.url.netloc != URL.parse(self._session.base(ref.host)).netloc:
            return f"{answer.url.netloc}, where {ref.host} redirected, answered {answer.status} for {ref}"
        if answer.status == 401:
            if not self._session.has_credentials(ref.host):
                return f"{ref.host} needs credentials (401); log in with `docker login {ref.host}`"
            return f"{ref.host} rejected the credentials for {ref.repository} (401); log in again"
        if answer.status == 403:
            return f"{ref.host} refused access to {ref.repository} (403); check the credentials' permissions"
        return f"{ref.host} answered {answer.status} for {ref}"


def _said(answer: Answer) -> str:
    """What a registry said about a refused request (its first error code and message), cut short."""
    try:
        errors = json.loads(answer.content).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f" ({redact.one_line(text)[:200]})" if text else ""


async def check_many(
    references: Sequence[str],
    platforms: Sequence[str] | None = None,
    *,
    insecure: Iterable[str] = (),
    concurrency: int = 16,
    transport: HTTPTransport | None = None,
    deadline: float | None = None,
    **options: Any,
) -> list[Existence]:
    """Check every reference concurrently; results in the same order, one per reference."""
    async with RegistryClient(
        insecure=insecure, concurrency=concurrency, transport=transport, deadline=deadline, **options
    ) as client:
        return list(await asyncio.gather(*(client.check(r, platforms) for r in references)))


def to_json(results: Iterable[Existence]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)
