"""What every operation of `Registry` shares: options, connections, credentials and tokens;
retries, 401 challenges, redirects and size-limited bodies; one deadline per operation and one
error path, every failure a RegistryError holding no secret the session has met.

429, 5xx and connection failures are retried with exponential backoff (`Retry-After` honoured up
to 30 s), a failed connection only when the request cannot have reached the server or is a GET
or HEAD. Redirects are followed (blobs sit behind a 307 to a CDN), the registry's Authorization
going only to its own origin, never down from HTTPS to HTTP. The deadline T bounds each
operation as a whole, retries and token requests included, except a blob upload and the reading
of a streamed blob, which only the per-phase limits of transport.py bound.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from .._errors import RegistryError
from . import auth, redact, wire
from .record import PlatformCache
from .reference import Reference
from .transport import (
    DEADLINE_ENV,
    Chunked,
    HTTPTransport,
    InvalidURL,
    TimedOut,
    TransportError,
    deadline_seconds,
    failure,
    join,
    netloc,
    open_client,
    origin,
    parse_url,
    request_body,
)

log = logging.getLogger("flyte_images.registry")

T = TypeVar("T")
S = TypeVar("S", bound="Session")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 30.0
# A request whose connection failed after it was sent may have been carried out: only these
# are sent again then (a POST that started an upload must not start a second one).
IDEMPOTENT = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Answer:
    """One HTTP answer with its whole (size-limited) body read, or, sent with `hold=True` and
    answered 200, with its body still to read from `stream` (the caller closes it)."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL  # the address asked, not the one sent to: a transport may rewrite it
    stream: httpx.Response | None = field(default=None, repr=False, compare=False)

    @property
    def media_type(self) -> str:
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()


@dataclass(frozen=True)
class Body:
    """What a request sends, with its media type: bytes, or a `Chunked` source read again from
    its start each time the request is sent."""

    content: bytes | Chunked
    media_type: str


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # a garbled header is no instruction: the backoff applies
    return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def describe(exc: Exception) -> str:
    if isinstance(exc, TransportError):
        return str(exc)  # already says what went wrong, in words
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Unreachable(Exception):
    """A connection-level failure at `where`; `again`: the request may be sent once more."""

    def __init__(self, where: str, exc: TransportError, *, again: bool) -> None:
        super().__init__(f"{where}: {exc}")
        self.where, self.why, self.again = where, describe(exc), again
        self.failed = "stopped responding" if isinstance(exc, TimedOut) and exc.sent else "could not be reached"


def _shown(value: str, limit: int = 60) -> str:
    """A server-chosen value as it may appear in a reason: quoted and cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class Session:
    """The shared state of one `Registry`; `async with` closes it."""

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
        self._keep, self._transport = concurrency, transport
        self._client: httpx.AsyncClient | None = None
        self._insecure = set(insecure)
        self._retries = max(1, retries)
        self._backoff = backoff
        self._redact = redact.Redactor()  # the secrets met so far, kept out of every message
        self._headers: dict[tuple[str, str], str] = {}  # (host, scope) -> Authorization value
        self._credentials: dict[str, auth.Credentials | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._platforms_known is not None:
            self._platforms_known.save()

    @property
    def _platform_cache(self) -> PlatformCache:
        # Read on first use: a registry used only to push never reads the file.
        if self._platforms_known is None:
            self._platforms_known = PlatformCache.default()
        return self._platforms_known

    def base(self, host: str) -> str:
        scheme = "http" if host in self._insecure or is_loopback(host) else "https"
        return f"{scheme}://{host}/v2"

    def _url(self, ref: Reference, kind: str, name: str) -> str:
        """`<base>/<repository>/<kind>/<name>`: kind is manifests or blobs."""
        return f"{self.base(ref.host)}/{ref.repository}/{kind}/{name}"

    async def _guarded(self, ref: Reference, work: Awaitable[T], *, bounded: bool = True) -> T:
        """`work` within the deadline (unless not `bounded`), every failure a RegistryError free
        of secrets."""
        try:
            return await (asyncio.wait_for(work, self._deadline) if bounded else work)
        except asyncio.TimeoutError:
            why = f"{ref.host} timed out after {self._deadline:g} s for {ref}; set {DEADLINE_ENV} to allow longer"
        except RegistryError as exc:
            why = str(exc)
        except (TransportError, InvalidURL) as exc:
            why = f"{ref.host} could not be reached for {ref}: {describe(exc)}"
        raise RegistryError(self._redact(why))

    def _refused(self, ref: Reference, answer: Answer, what: str = "", *, push: bool = False) -> RegistryError:
        """The error for an unwanted answer about `what` of `ref`: who answered what, the
        registry's own words, and the fix."""
        of, fix = f"{what} of {ref}" if what else str(ref), ""
        if netloc(answer.url) != netloc(parse_url(self.base(ref.host))):
            head = f"{netloc(answer.url)}, where {ref.host} redirected, answered {answer.status} for {of}"
        elif answer.status == 401 and self._credentials.get(ref.host) is None:
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

    async def send(
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
        """`method url` in `ref`'s repository as an operation of its own (`_guarded`). With a
        `body` or `push` (the POST that starts an upload) the token asked for allows pushing;
        `hold` leaves a 200 answer's body unread in `Answer.stream` (a layer blob)."""
        scope = f"repository:{ref.repository}:{'pull' if body is None and not push else 'pull,push'}"
        return await self._guarded(
            ref, self._attempts(ref.host, scope, method, url, limit, body, hold), bounded=bounded
        )

    async def _attempts(
        self, host: str, scope: str, method: str, url: str, limit: int, body: Body | None, hold: bool
    ) -> Answer:
        start = parse_url(url)
        authenticated = False
        attempt = 0
        while True:
            headers = {"Accept": wire.ACCEPT}
            if body is not None:
                headers["Content-Type"] = body.media_type
            if (host, scope) in self._headers:
                headers["Authorization"] = self._headers[(host, scope)]
            try:
                answer = await self._follow(host, method, start, headers, limit, body, hold)
            except _Unreachable as exc:
                if attempt >= self._retries - 1 or not exc.again:
                    raise RegistryError(f"{exc.where} {exc.failed}: {exc.why}") from None
                attempt += 1
                await self._pause(exc.where, attempt, None, exc.why)
                continue
            if answer.status == 401 and not authenticated and origin(answer.url) == origin(start):
                authenticated = True
                if await self._authenticate(host, scope, answer):
                    continue
                return answer
            if answer.status in RETRY_STATUS and attempt < self._retries - 1:
                attempt += 1
                await self._pause(host, attempt, retry_after(answer.headers), f"answered {answer.status}")
                continue
            return answer

    async def _pause(self, host: str, attempt: int, wait: float | None, why: str) -> None:
        delay = self._backoff * 2**attempt if wait is None else wait
        log.debug("%s", self._redact(f"{host} {why}; retry {attempt} in {delay:.2f} s"))
        await asyncio.sleep(delay)

    async def _follow(
        self, host: str, method: str, url: httpx.URL, headers: dict[str, str], limit: int, body: Body | None, hold: bool
    ) -> Answer:
        home = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = await self.read(method, url, headers, limit, body.content if body else None, hold=hold)
            except TransportError as exc:
                where = host if origin(url) == home else f"{netloc(url)} (where {host} redirected)"
                raise _Unreachable(where, exc, again=not exc.sent or method in IDEMPOTENT) from None
            location = answer.headers.get("Location")
            if answer.status not in REDIRECT_STATUS or not location:
                return answer
            url = self._redirect_target(host, url, location)
            if origin(url) != home:
                # The registry's credentials are for the registry; a CDN or bucket gets none.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            log.debug("%s", self._redact(f"{host} redirected ({answer.status}) to {url}"))
        raise RegistryError(f"{host} redirected more than {MAX_REDIRECTS} times; is a proxy in a loop?")

    def _redirect_target(self, host: str, current: httpx.URL, location: str) -> httpx.URL:
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(str(current), location)).scheme
        if scheme not in ("http", "https"):
            raise RegistryError(f"{host} redirected to {_shown(scheme)} address; only HTTP(S) is followed")
        try:
            target = join(current, location)
        except InvalidURL:
            raise RegistryError(f"{host} redirected to an address that is not a URL") from None
        if current.scheme == "https" and target.scheme == "http":
            raise RegistryError(f"{host} redirected from HTTPS to plain HTTP ({target.host}); refusing to downgrade")
        return target

    async def read(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        limit: int,
        content: bytes | Chunked | None = None,
        *,
        hold: bool = False,
    ) -> Answer:
        """One request, its answer's body read whole up to `limit` bytes (unless `hold`). Raises
        TransportError."""
        if self._client is None:
            # Opened on the first request: a session that sends none costs nothing, and a proxy
            # variable that cannot be used fails that request, not the caller's set-up.
            self._client = open_client(timeout=self._deadline, keep=self._keep, transport=self._transport)
        sent_headers = dict(headers)
        body = request_body(content)
        if content is not None and not isinstance(body, bytes):
            sent_headers["Content-Length"] = str(len(content) if isinstance(content, bytes) else content.size)
        try:
            request = self._client.build_request(method, url, headers=sent_headers, content=body)
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise failure(exc, self._deadline) from None
        if hold and response.status_code == 200:
            return Answer(200, response.headers, b"", url, stream=response)
        try:
            whole = await _whole(method, response, url, limit, self._deadline)
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, whole, url)

    async def _creds(self, host: str) -> auth.Credentials | None:
        async with self._locks.setdefault(host, asyncio.Lock()):
            if host not in self._credentials:
                found = await asyncio.to_thread(auth.credentials_for, host)
                if found is not None:
                    self._redact.add(*found.secrets())
                self._credentials[host] = found
        return self._credentials[host]

    async def _authenticate(self, host: str, scope: str, answer: Answer) -> bool:
        """Answer a 401 challenge; True when there is an Authorization header to retry with."""
        scheme, params = auth.parse_challenge(answer.headers.get("WWW-Authenticate", ""))
        creds = await self._creds(host)
        if scheme == "basic":
            if creds is None:
                return False
            self._headers[(host, scope)] = creds.basic_header()
            return True
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"{host} asked for an unsupported authentication scheme {_shown(scheme)}")
        token = await self._token(host, scope, params, creds)
        self._redact.add(token)
        self._headers[(host, scope)] = f"Bearer {token}"
        return True

    async def _token(self, host: str, scope: str, params: dict[str, str], creds: auth.Credentials | None) -> str:
        try:
            realm = parse_url(params["realm"])
        except InvalidURL:
            kind = "a URL" if urllib.parse.urlsplit(params["realm"]).scheme in ("http", "https") else "an HTTP(S) URL"
            raise RegistryError(f"{host} named a token service whose address is not {kind}") from None
        if realm.scheme == "http" and creds is not None and self.base(host).startswith("https"):
            raise RegistryError(
                f"{host} named a token service on plain HTTP ({realm.host}); refusing to send credentials unencrypted"
            )
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": creds.basic_header()} if creds else {}
        try:
            answer = await self.read("GET", realm.copy_merge_params(query), headers, wire.MAX_TOKEN)
        except TransportError as exc:
            raise RegistryError(f"the token service of {host} could not be reached: {describe(exc)}") from None
        if answer.status != 200:
            who = "with the stored credentials" if creds else "anonymously"
            raise RegistryError(
                f"the token service of {host} refused a token {who} ({answer.status}); "
                f"log in with `docker login {host}`"
            )
        body = wire.parse(wire.TokenAnswer, answer.content, f"the token service of {host} answered a body that")
        token = body.token or body.access_token
        if not token:
            raise RegistryError(f"the token service of {host} answered without a token")
        return token


async def _whole(method: str, response: httpx.Response, url: httpx.URL, limit: int, timeout: float) -> bytes:
    """The body of `response` as sent, refused past `limit` bytes."""
    too_big = f"{netloc(url)} answered more than {limit // 1024} KiB for {url.path}, more than any registry answer"
    declared = response.headers.get("Content-Length", "")
    if method != "HEAD" and declared.isdigit() and int(declared) > limit:
        raise RegistryError(too_big)
    body = bytearray()
    async for chunk in raw_chunks(response, timeout):
        body += chunk
        if len(body) > limit:
            raise RegistryError(too_big)
    return bytes(body)


async def raw_chunks(response: httpx.Response, timeout: float) -> AsyncIterator[bytes]:
    """The body's bytes as sent, never decoded (a blob is checked against its digest); a
    TransportError when the connection breaks or stalls. One a transport handed in made whole
    in memory is read already."""
    try:
        if response.is_stream_consumed:
            yield response.content
            return
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise failure(exc, timeout) from None


def _said(answer: Answer) -> str:
    """A refused request's first error code and message, cut short."""
    try:
        errors = json.loads(answer.content).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f" ({redact.one_line(text)[:200]})" if text else ""
