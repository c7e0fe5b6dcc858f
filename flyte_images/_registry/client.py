"""Existence checks against any OCI distribution registry, over HTTP/1.1 with kept-alive connections.

An answer is one of three states, and only a registry that answered 200 yields "exists":

- exists: the manifest is there (with its digest) and, when platforms were asked for, it
  covers every one of them (an index is read; a single manifest's config blob is read);
- missing: 404, or the manifest lacks a requested platform;
- unknown: the registry could not be asked (unreachable, 5xx or 429 after retries, 401 with
  no usable credentials). Callers must never treat it as "exists".

Retries: 429 and 5xx responses and connection errors are retried with exponential backoff
(a `Retry-After` header is honoured, up to 30 s). Plain HTTP is used only for hosts configured
as insecure (`insecure_registries`, FLYTE_IMAGES_INSECURE_REGISTRIES) and for loopback hosts,
which Docker also treats as insecure; HTTPS everywhere else.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .._errors import RegistryError
from . import auth
from .record import PlatformCache

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str

    def __str__(self) -> str:
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.host}/{self.repository}{sep}{self.tag}"


def parse_reference(ref: str) -> Reference:
    """`host[:port]/repo[/...]:tag` (or `@sha256:...`); Docker Hub names are expanded."""
    name, _, digest = ref.partition("@")
    tag = digest
    if not tag:
        slash, colon = name.rfind("/"), name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        else:
            tag = "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "registry-1.docker.io", name if rest else f"library/{name}"
    if not repository or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:__[a-z0-9]+)*", repository):
        raise RegistryError(f"{ref!r} is not an image reference like registry.example/team/app:tag")
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


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    parsed = email.utils.parsedate_to_datetime(value)
    return min(max(parsed.timestamp() - time.time(), 0.0), _MAX_RETRY_AFTER)


def _platform(entry: dict[str, Any]) -> str:
    platform = f"{entry.get('os', '')}/{entry.get('architecture', '')}"
    return f"{platform}/{entry['variant']}" if entry.get("variant") else platform


class RegistryClient:
    """Checks many references concurrently, sharing connections, credentials and tokens."""

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        concurrency: int = 16,
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        platform_cache: PlatformCache | None = None,
    ) -> None:
        self._insecure = set(insecure)
        self._platform_cache = platform_cache if platform_cache is not None else PlatformCache.default()
        self._limit = asyncio.Semaphore(concurrency)
        self._retries = retries
        self._backoff = backoff
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport)
        self._headers: dict[tuple[str, str], str] = {}  # (host, scope) -> Authorization value
        self._credentials: dict[str, auth.Credentials | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._http.aclose()
        self._platform_cache.save()

    def _base(self, host: str) -> str:
        scheme = "http" if host in self._insecure or is_loopback(host) else "https"
        return f"{scheme}://{host}/v2"

    async def check(self, reference: str, platforms: Sequence[str] | None = None) -> Existence:
        """Whether `reference` exists (with every platform in `platforms`, when given)."""
        try:
            ref = parse_reference(reference)
        except RegistryError as exc:
            return Existence(reference, "unknown", reason=str(exc))
        async with self._limit:
            try:
                return await self._check(reference, ref, tuple(platforms or ()))
            except RegistryError as exc:
                return Existence(reference, "unknown", reason=str(exc))

    async def _check(self, reference: str, ref: Reference, platforms: tuple[str, ...]) -> Existence:
        url = f"{self._base(ref.host)}/{ref.repository}/manifests/{ref.tag}"
        response = await self._get(ref, "GET" if platforms else "HEAD", url)
        if response.status_code == 404:
            return Existence(reference, "missing", reason=f"{ref.host} has no {ref.repository}:{ref.tag}")
        if response.status_code != 200:
            raise RegistryError(self._failure(ref, response))
        digest = response.headers.get("Docker-Content-Digest")
        if not platforms:
            return Existence(reference, "exists", digest=digest)
        digest = digest or "sha256:" + hashlib.sha256(response.content).hexdigest()
        found = self._platform_cache.get(digest)
        if found is None:
            found = await self._platforms(ref, response)
            self._platform_cache.put(digest, found)
        lacking = [p for p in platforms if p not in found]
        if lacking:
            reason = f"exists for {', '.join(found) or 'no known platform'}, not for {', '.join(lacking)}"
            return Existence(reference, "missing", digest=digest, platforms=found, reason=reason)
        return Existence(reference, "exists", digest=digest, platforms=found)

    async def _platforms(self, ref: Reference, response: httpx.Response) -> tuple[str, ...]:
        try:
            manifest = response.json()
        except ValueError:
            raise RegistryError(f"{ref} answered with a manifest that is not JSON") from None
        media = manifest.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
        if media in INDEX_TYPES or "manifests" in manifest:
            entries = manifest["manifests"]
            return tuple(sorted({_platform(m["platform"]) for m in entries if "platform" in m}))
        config = manifest.get("config", {}).get("digest")
        if not config:
            raise RegistryError(f"{ref} has a manifest without a config; cannot tell its platform")
        blob = await self._get(ref, "GET", f"{self._base(ref.host)}/{ref.repository}/blobs/{config}")
        if blob.status_code != 200:
            raise RegistryError(self._failure(ref, blob))
        try:
            return (_platform(blob.json()),)
        except ValueError:
            raise RegistryError(f"the config blob of {ref} is not JSON") from None

    def _failure(self, ref: Reference, response: httpx.Response) -> str:
        if response.status_code == 401:
            if self._credentials.get(ref.host) is None:
                return f"{ref.host} needs credentials (401); log in with `docker login {ref.host}`"
            return f"{ref.host} rejected the credentials for {ref.repository} (401); log in again"
        if response.status_code == 403:
            return f"{ref.host} refused access to {ref.repository} (403); check the credentials' permissions"
        return f"{ref.host} answered {response.status_code} for {ref}"

    async def _get(self, ref: Reference, method: str, url: str) -> httpx.Response:
        scope = f"repository:{ref.repository}:pull"
        authenticated = False
        attempt = 0
        while True:
            headers = {"Accept": ACCEPT}
            if (ref.host, scope) in self._headers:
                headers["Authorization"] = self._headers[(ref.host, scope)]
            try:
                response = await self._http.request(method, url, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self._retries - 1:
                    raise RegistryError(f"{ref.host} could not be reached: {type(exc).__name__}: {exc}") from None
                attempt += 1
                await asyncio.sleep(self._backoff * 2**attempt)
                continue
            if response.status_code == 401 and not authenticated:
                authenticated = True
                if await self._authenticate(ref, scope, response):
                    continue
                return response
            if response.status_code in _RETRY_STATUS and attempt < self._retries - 1:
                attempt += 1
                wait = _retry_after(response)
                await asyncio.sleep(self._backoff * 2**attempt if wait is None else wait)
                continue
            return response

    async def _creds(self, host: str) -> auth.Credentials | None:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            if host not in self._credentials:
                self._credentials[host] = await asyncio.to_thread(auth.credentials_for, host)
        return self._credentials[host]

    async def _authenticate(self, ref: Reference, scope: str, response: httpx.Response) -> bool:
        """Answer a 401 challenge; True when there is an Authorization header to retry with."""
        scheme, params = auth.parse_challenge(response.headers.get("WWW-Authenticate", ""))
        creds = await self._creds(ref.host)
        if scheme == "basic":
            if creds is None:
                return False
            self._headers[(ref.host, scope)] = creds.basic_header()
            return True
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"{ref.host} asked for an unsupported authentication scheme {scheme!r}")
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": creds.basic_header()} if creds else {}
        try:
            token_response = await self._http.get(params["realm"], params=query, headers=headers)
        except httpx.TransportError as exc:
            raise RegistryError(f"the token service of {ref.host} could not be reached: {exc}") from None
        if token_response.status_code != 200:
            who = "with the stored credentials" if creds else "anonymously"
            raise RegistryError(
                f"the token service of {ref.host} refused a token {who} ({token_response.status_code}); "
                f"log in with `docker login {ref.host}`"
            )
        try:
            body = token_response.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise RegistryError(f"the token service of {ref.host} answered without a token")
        self._headers[(ref.host, scope)] = f"Bearer {token}"
        return True


async def check_many(
    references: Sequence[str],
    platforms: Sequence[str] | None = None,
    *,
    insecure: Iterable[str] = (),
    concurrency: int = 16,
    transport: httpx.AsyncBaseTransport | None = None,
    **options: Any,
) -> list[Existence]:
    """Check every reference concurrently; results in the same order."""
    async with RegistryClient(insecure=insecure, concurrency=concurrency, transport=transport, **options) as client:
        return list(await asyncio.gather(*(client.check(r, platforms) for r in references)))


def to_json(results: Iterable[Existence]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)
