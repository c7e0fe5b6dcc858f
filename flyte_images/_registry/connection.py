"""What every operation of `Registry` shares: its options, its one `Session` (connections,
credentials, tokens) and its one way of turning a failure into a RegistryError.

The deadline T (`deadline=`, else FLYTE_IMAGES_REGISTRY_TIMEOUT, else 20 s; transport.py says
how it applies) bounds each operation as a whole: an existence check with its redirects, token
requests and retries; a read or a write of one document. A blob upload and the reading of a
streamed blob have no such bound, only the per-phase limits of every request: they fail when
they stall, never for their length. Every failure of an operation is a RegistryError whose
message holds no secret the session has met (passwords, tokens) nor anything shaped like one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from .._errors import RegistryError
from . import redact
from .record import PlatformCache
from .reference import Reference
from .session import Answer, Body, Session, describe
from .transport import DEADLINE_ENV, URL, HTTPTransport, InvalidURL, TransportError, deadline_seconds

T = TypeVar("T")
C = TypeVar("C", bound="Connection")


class Connection:
    """The options and the session of one `Registry`; `async with` closes it."""

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
    ) -> None:
        """`insecure`: hosts spoken to over plain HTTP (loopback hosts always are);
        `concurrency`: existence checks in flight at once (the others wait, their deadline not
        yet started); `retries` and `backoff`: attempts of a request that may be sent again,
        and the first pause between them (doubled each time); `transport`: an httpx transport
        in place of the network (a test's fake registry); `platform_cache`: the platforms of
        manifests by digest (default: the one in the cache folder, read when first needed);
        `deadline`: T, above. Raises ConfigError for a deadline that is not a number of seconds."""
        self._deadline = deadline_seconds(deadline)
        self._limit = asyncio.Semaphore(concurrency)
        self._platforms_known = platform_cache
        self._session = Session(
            insecure=insecure,
            retries=retries,
            backoff=backoff,
            timeout=self._deadline,
            keep=concurrency,
            transport=transport,
        )
        self._redact = self._session.redact

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._session.aclose()
        if self._platforms_known is not None:
            self._platforms_known.save()

    @property
    def _platform_cache(self) -> PlatformCache:
        # Read on first use: a registry used only to push never reads the file.
        if self._platforms_known is None:
            self._platforms_known = PlatformCache.default()
        return self._platforms_known

    def _url(self, ref: Reference, kind: str, name: str) -> str:
        """`<base>/<repository>/<kind>/<name>`: kind is manifests or blobs."""
        return f"{self._session.base(ref.host)}/{ref.repository}/{kind}/{name}"

    async def _guarded(self, ref: Reference, work: Awaitable[T], *, bounded: bool = True) -> T:
        """`work` within the deadline (unless not `bounded`), every failure a RegistryError free
        of secrets: the one error path of every operation."""
        try:
            return await (asyncio.wait_for(work, self._deadline) if bounded else work)
        except asyncio.TimeoutError:
            why = f"{ref.host} timed out after {self._deadline:g} s for {ref}; set {DEADLINE_ENV} to allow longer"
        except RegistryError as exc:
            why = str(exc)
        except (TransportError, InvalidURL) as exc:
            why = f"{ref.host} could not be reached for {ref}: {describe(exc)}"
        raise RegistryError(self._redact(why))

    async def _send(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        limit: int,
        body: Body | None = None,
        push: bool = False,
        hold: bool = False,
        bounded: bool = True,
    ) -> Answer:
        """One request (with its retries, challenges and redirects) as an operation of its own:
        see `Session.send` for `body`, `push` and `hold`, and `_guarded` for `bounded`."""
        work = self._session.send(ref.host, ref.repository, method, url, limit=limit, body=body, push=push, hold=hold)
        return await self._guarded(ref, work, bounded=bounded)

    def _refused(self, ref: Reference, answer: Answer, what: str = "", *, push: bool = False) -> RegistryError:
        """The error for an answer that is not the one asked for: who answered what for `what`
        (the manifest, a blob...) of `ref`, the registry's own words, and the fix."""
        of, fix = f"{what} of {ref}" if what else str(ref), ""
        if answer.url.netloc != URL.parse(self._session.base(ref.host)).netloc:
            head = f"{answer.url.netloc}, where {ref.host} redirected, answered {answer.status} for {of}"
        elif answer.status == 401 and not self._session.has_credentials(ref.host):
            head, fix = f"{ref.host} needs credentials for {of} (401)", f"log in with `docker login {ref.host}`"
        elif answer.status == 401:
            head = f"{ref.host} rejected the credentials for {of} (401)"
            fix = f"log in again with `docker login {ref.host}`"
        elif answer.status == 403:
            head = f"{ref.host} refused access to {of} (403)"
            fix = f"check that the credentials may {'push to' if push else 'pull from'} {ref.repository}"
        else:
            head = f"{ref.host} answered {answer.status} for {of}"
        return RegistryError(self._redact(head + _said(answer) + (f"; {fix}" if fix else "")))


def _said(answer: Answer) -> str:
    """What a registry said about a refused request (its first error code and message), cut short."""
    try:
        errors = json.loads(answer.content).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f" ({redact.one_line(text)[:200]})" if text else ""
