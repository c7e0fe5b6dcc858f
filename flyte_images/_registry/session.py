"""HTTP to registries for one `Registry`: retries, the 401 challenge flows, redirects and
size-limited bodies.

Retries: 429 and 5xx answers are retried with exponential backoff (a `Retry-After` header is
honoured, up to 30 s; a garbled one is ignored), and so are connection failures, but only of a
request that cannot have reached the server (no connection) or of a GET or HEAD: a POST or PUT
whose connection broke after it was sent is never sent again.

Redirects are followed, since blobs on Docker Hub, GHCR and ECR sit behind a 307 to a CDN or S3.
The registry's Authorization header goes only to the registry's own origin (scheme, host and
port): a redirect elsewhere is followed without it, a 401 from elsewhere is never answered with
credentials, and HTTPS is never followed down to plain HTTP.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import httpx

from .._errors import RegistryError
from . import auth, wire
from .redact import Redactor
from .transport import (
    DEFAULT_DEADLINE,
    URL,
    Chunked,
    Headers,
    HTTPTransport,
    InvalidURL,
    TimedOut,
    TransportError,
    body_size,
    failure,
    open_client,
    request_body,
)

log = logging.getLogger("flyte_images.registry")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Answer:
    """One HTTP answer with its whole (size-limited) body read, or, for a request sent with
    `hold=True` that was answered 200, with its body still to read from `stream` (the caller
    closes it)."""

    status: int
    headers: Headers
    content: bytes
    url: URL
    stream: Stream | None = field(default=None, repr=False, compare=False)

    @property
    def media_type(self) -> str:
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()


class Stream:
    """The unread body of an answer, read as it arrives."""

    def __init__(self, response: httpx.Response, timeout: float) -> None:
        self._response, self._timeout = response, timeout

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as sent (never decoded); TransportError when the connection breaks
        or stalls before its end."""
        try:
            async for chunk in _raw(self._response):
                yield chunk
        except httpx.HTTPError as exc:
            raise failure(exc, self._timeout) from None

    async def aclose(self) -> None:
        await self._response.aclose()


@dataclass(frozen=True)
class Body:
    """What a request sends, with its media type: a document (a manifest or index) or a blob,
    as bytes or from a `Chunked` source, read again from its start each time it is sent."""

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


def retry_after(headers: Headers) -> float | None:
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


# A request whose connection failed after it was sent may have been carried out: only these
# are sent again then (a POST that started an upload must not start a second one).
IDEMPOTENT = frozenset({"GET", "HEAD"})


class _Unreachable(Exception):
    """A connection-level failure; `where` names the host that failed, `again` whether the
    request may be sent once more (it never reached the server, or it is a GET or HEAD)."""

    def __init__(self, where: str, exc: TransportError, *, again: bool) -> None:
        super().__init__(f"{where}: {exc}")
        self.where, self.why, self.again = where, describe(exc), again
        self.failed = "stopped responding" if isinstance(exc, TimedOut) and exc.sent else "could not be reached"


def _origin(url: URL) -> tuple[str, str, int]:
    return url.origin


def _shown(value: str, limit: int = 60) -> str:
    """A server-chosen value as it may appear in a reason: quoted and cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class Session:
    """Connections, credentials and tokens shared by every request of one client: existence
    checks, reads and pushes alike. `aclose()` it when done."""

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float = DEFAULT_DEADLINE,
        keep: int = 16,
        transport: HTTPTransport | None = None,
    ) -> None:
        # `timeout`: the per-phase limits of every request (transport.py's docstring).
        self._timeout, self._keep, self._transport = timeout, keep, transport
        self._client: httpx.AsyncClient | None = None
        self._insecure = set(insecure)
        self._retries = max(1, retries)
        self._backoff = backoff
        self.redact = Redactor()  # the secrets met so far, kept out of every message
        self._headers: dict[tuple[str, str], str] = {}  # (host, scope) -> Authorization value
        self._credentials: dict[str, auth.Credentials | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _http(self) -> httpx.AsyncClient:
        # Opened on the first request: a session that sends none costs nothing, and a proxy
        # variable that cannot be used fails that request (a RegistryError), not the caller's set-up.
        if self._client is None:
            self._client = open_client(timeout=self._timeout, keep=self._keep, transport=self._transport)
        return self._client

    def base(self, host: str) -> str:
        scheme = "http" if host in self._insecure or is_loopback(host) else "https"
        return f"{scheme}://{host}/v2"

    def has_credentials(self, host: str) -> bool:
        return self._credentials.get(host) is not None

    async def get(self, host: str, repository: str, method: str, url: str, *, limit: int) -> Answer:
        """`method url` on `host`, answering its challenge and retrying what is worth retrying."""
        return await self.send(host, repository, method, url, limit=limit)

    async def send(
        self,
        host: str,
        repository: str,
        method: str,
        url: str,
        *,
        limit: int,
        body: Body | None = None,
        push: bool = False,
        hold: bool = False,
    ) -> Answer:
        """`get`, with a document to send (a PUT of a manifest): the token asked for then also
        allows pushing, since registries scope tokens to the actions they allow. `push` asks for
        that scope without a body (the POST that starts a blob upload). `hold` leaves the body
        of a 200 answer unread in `Answer.stream` (a layer blob, too big to hold in memory):
        retries, challenges and redirects happen before it, as for any request."""
        scope = f"repository:{repository}:{'pull' if body is None and not push else 'pull,push'}"
        start = URL.parse(url)
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
            if answer.status == 401 and not authenticated and _origin(answer.url) == _origin(start):
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
        log.debug("%s", self.redact(f"{host} {why}; retry {attempt} in {delay:.2f} s"))
        await asyncio.sleep(delay)

    async def _follow(
        self,
        host: str,
        method: str,
        url: URL,
        headers: dict[str, str],
        limit: int,
        body: Body | None = None,
        hold: bool = False,
    ) -> Answer:
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = await self.read(method, url, headers, limit, body.content if body else None, hold=hold)
            except TransportError as exc:
                where = host if _origin(url) == origin else f"{url.netloc} (where {host} redirected)"
                raise _Unreachable(where, exc, again=not exc.sent or method in IDEMPOTENT) from None
            location = answer.headers.get("Location")
            if answer.status not in REDIRECT_STATUS or not location:
                return answer
            url = self._redirect_target(host, url, location)
            if _origin(url) != origin:
                # The registry's credentials are for the registry; a CDN or bucket gets none.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            log.debug("%s", self.redact(f"{host} redirected ({answer.status}) to {url}"))
        raise RegistryError(f"{host} redirected more than {MAX_REDIRECTS} times; is a proxy in a loop?")

    def _redirect_target(self, host: str, current: URL, location: str) -> URL:
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(str(current), location)).scheme
        if scheme not in ("http", "https"):
            raise RegistryError(f"{host} redirected to {_shown(scheme)} address; only HTTP(S) is followed")
        try:
            # Credentials written into a redirect address are not kept: not the registry's to hand out.
            target = current.join(location)
        except InvalidURL:
            raise RegistryError(f"{host} redirected to an address that is not a URL") from None
        if current.scheme == "https" and target.scheme == "http":
            raise RegistryError(f"{host} redirected from HTTPS to plain HTTP ({target.host}); refusing to downgrade")
        return target

    async def read(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        limit: int,
        content: bytes | Chunked | None = None,
        *,
        hold: bool = False,
    ) -> Answer:
        """One request; the body is read whole, but never more than `limit` bytes of it (with
        `hold`, a 200 answer's body is left to the caller, unread). Raises TransportError."""
        client = self._http()
        sent_headers = dict(headers)
        body = request_body(content)
        if content is not None and not isinstance(body, bytes):
            sent_headers["Content-Length"] = str(body_size(content))  # counted, not chunked
        try:
            request = client.build_request(method, str(url), headers=sent_headers, content=body)
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise failure(exc, self._timeout) from None
        # Answers carry the address asked, not the one sent to: a transport may rewrite it.
        answer_headers = Headers(response.headers.multi_items())
        if hold and response.status_code == 200:
            return Answer(200, answer_headers, b"", url, stream=Stream(response, self._timeout))
        try:
            whole = await _whole(method, response, url, answer_headers, limit, self._timeout)
        finally:
            await response.aclose()
        return Answer(response.status_code, answer_headers, whole, url)

    async def _creds(self, host: str) -> auth.Credentials | None:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            if host not in self._credentials:
                found = await asyncio.to_thread(auth.credentials_for, host)
                if found is not None:
                    self.redact.add(*found.secrets())
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
        self.redact.add(token)
        self._headers[(host, scope)] = f"Bearer {token}"
        return True

    def _realm(self, host: str, realm: str, creds: auth.Credentials | None) -> URL:
        try:
            url = URL.parse(realm)
        except InvalidURL:
            if urllib.parse.urlsplit(realm).scheme in ("http", "https"):
                raise RegistryError(f"{host} named a token service whose address is not a URL") from None
            raise RegistryError(f"{host} named a token service whose address is not an HTTP(S) URL") from None
        if url.scheme == "http" and creds is not None and self.base(host).startswith("https"):
            raise RegistryError(
                f"{host} named a token service on plain HTTP ({url.host}); refusing to send credentials unencrypted"
            )
        return url

    async def _token(self, host: str, scope: str, params: dict[str, str], creds: auth.Credentials | None) -> str:
        realm = self._realm(host, params["realm"], creds)
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": creds.basic_header()} if creds else {}
        try:
            answer = await self.read("GET", realm.with_params(query), headers, wire.MAX_TOKEN)
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


async def _whole(
    method: str, response: httpx.Response, url: URL, headers: Headers, limit: int, timeout: float
) -> bytes:
    """The body of `response` as sent, refused past `limit` bytes."""
    too_big = f"{url.netloc} answered more than {limit // 1024} KiB for {url.path}, more than any registry answer"
    declared = headers.get("Content-Length", "")
    if method != "HEAD" and declared.isdigit() and int(declared) > limit:
        raise RegistryError(too_big)
    body = bytearray()
    try:
        async for chunk in _raw(response):
            body += chunk
            if len(body) > limit:
                raise RegistryError(too_big)
    except httpx.HTTPError as exc:
        raise failure(exc, timeout) from None
    return bytes(body)


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as sent, never decoded: a blob is checked against its digest. An answer
    made whole in memory (by a transport handed in) is read already: its bytes as they are."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk
