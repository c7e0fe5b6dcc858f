"""HTTP to registries for one RegistryClient: retries, the 401 challenge flows, redirects and
size-limited bodies.

Retries: 429 and 5xx answers and connection errors are retried with exponential backoff (a
`Retry-After` header is honoured, up to 30 s; a garbled one is ignored).

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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .._errors import RegistryError
from .._http import httpx
from . import auth, wire
from .redact import Redactor

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
    headers: httpx.Headers
    content: bytes
    url: httpx.URL
    stream: httpx.Response | None = field(default=None, repr=False, compare=False)

    @property
    def media_type(self) -> str:
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()


@dataclass(frozen=True)
class Body:
    """A document sent to a registry (a manifest or index) with its media type."""

    content: bytes
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
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Unreachable(Exception):
    """A connection-level failure, worth a retry; `where` names the host that failed."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where, self.why = where, why


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _shown(value: str, limit: int = 60) -> str:
    """A server-chosen value as it may appear in a reason: quoted and cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class _WhenFirstUsed(httpx.AsyncBaseTransport):
    """A transport made on its first request. The TLS one loads the system's CA certificates
    (about 20 ms): a process that only talks to a plain-HTTP registry on loopback never pays it."""

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport]) -> None:
        self._make = make
        self._real: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._real is None:
            self._real = self._make()
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        if self._real is not None:
            await self._real.aclose()


def new_client(
    *, timeout: float, limits: httpx.Limits | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The HTTP client of a session: TLS set up only when an https:// URL is first asked."""
    pool = limits or httpx.Limits()
    if transport is not None:
        return httpx.AsyncClient(timeout=timeout, transport=transport, limits=pool)
    secure = _WhenFirstUsed(lambda: httpx.AsyncHTTPTransport(limits=pool))
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return httpx.AsyncClient(timeout=timeout, limits=pool)  # httpx routes through the proxy
    plain = httpx.AsyncHTTPTransport(verify=False, limits=pool)  # only ever sees http:// URLs
    return httpx.AsyncClient(timeout=timeout, transport=secure, mounts={"http://": plain})


_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class Session:
    """Connections, credentials and tokens shared by every check of one client."""

    def __init__(
        self, http: httpx.AsyncClient, *, insecure: set[str], retries: int, backoff: float, redactor: Redactor
    ) -> None:
        self._http = http
        self._insecure = insecure
        self._retries = max(1, retries)
        self._backoff = backoff
        self._redact = redactor
        self._headers: dict[tuple[str, str], str] = {}  # (host, scope) -> Authorization value
        self._credentials: dict[str, auth.Credentials | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}

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
        start = httpx.URL(url)
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
                if attempt >= self._retries - 1:
                    raise RegistryError(f"{exc.where} could not be reached: {exc.why}") from None
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
        log.debug("%s", self._redact(f"{host} {why}; retry {attempt} in {delay:.2f} s"))
        await asyncio.sleep(delay)

    async def _follow(
        self,
        host: str,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        limit: int,
        body: Body | None = None,
        hold: bool = False,
    ) -> Answer:
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = await self.read(method, url, headers, limit, body.content if body else None, hold=hold)
            except httpx.TransportError as exc:
                where = host if _origin(url) == origin else f"{url.netloc.decode()} (where {host} redirected)"
                raise _Unreachable(where, describe(exc)) from None
            location = answer.headers.get("Location")
            if answer.status not in REDIRECT_STATUS or not location:
                return answer
            url = self._redirect_target(host, url, location)
            if _origin(url) != origin:
                # The registry's credentials are for the registry; a CDN or bucket gets none.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            log.debug("%s", self._redact(f"{host} redirected ({answer.status}) to {url}"))
        raise RegistryError(f"{host} redirected more than {MAX_REDIRECTS} times; is a proxy in a loop?")

    def _redirect_target(self, host: str, current: httpx.URL, location: str) -> httpx.URL:
        try:
            target = current.join(location)
        except (httpx.InvalidURL, ValueError):
            raise RegistryError(f"{host} redirected to an address that is not a URL") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise RegistryError(f"{host} redirected to {_shown(target.scheme)} address; only HTTP(S) is followed")
        if current.scheme == "https" and target.scheme == "http":
            raise RegistryError(f"{host} redirected from HTTPS to plain HTTP ({target.host}); refusing to downgrade")
        # Credentials written into a redirect address are not the registry's to hand out.
        return target.copy_with(userinfo=b"")

    async def read(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        limit: int,
        content: bytes | None = None,
        *,
        hold: bool = False,
    ) -> Answer:
        """One request; the body is read whole, but never more than `limit` bytes of it (with
        `hold`, a 200 answer's body is left to the caller, unread)."""
        request = self._http.build_request(method, url, headers=headers, content=content)
        response = await self._http.send(request, stream=True)
        if hold and response.status_code == 200:
            return Answer(response.status_code, response.headers, b"", url, stream=response)
        where = url.netloc.decode()
        too_big = f"{where} answered more than {limit // 1024} KiB for {url.path}, more than any registry answer"
        try:
            declared = response.headers.get("Content-Length", "")
            if method != "HEAD" and declared.isdigit() and int(declared) > limit:
                raise RegistryError(too_big)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise RegistryError(too_big)
        except httpx.DecodingError as exc:
            raise RegistryError(f"{where} answered a body that cannot be decoded ({describe(exc)})") from None
        finally:
            await response.aclose()
        # The address asked, not response.url: a transport may rewrite the request it sends.
        return Answer(response.status_code, response.headers, bytes(body), url)

    async def _creds(self, host: str) -> auth.Credentials | None:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
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

    def _realm(self, host: str, realm: str, creds: auth.Credentials | None) -> httpx.URL:
        try:
            url = httpx.URL(realm)
        except (httpx.InvalidURL, ValueError):
            raise RegistryError(f"{host} named a token service whose address is not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise RegistryError(f"{host} named a token service whose address is not an HTTP(S) URL")
        if url.scheme == "http" and creds is not None and self.base(host).startswith("https"):
            raise RegistryError(
                f"{host} named a token service on plain HTTP ({url.host}); refusing to send credentials unencrypted"
            )
        return url.copy_with(userinfo=b"")

    async def _token(self, host: str, scope: str, params: dict[str, str], creds: auth.Credentials | None) -> str:
        realm = self._realm(host, params["realm"], creds)
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": creds.basic_header()} if creds else {}
        try:
            answer = await self.read("GET", realm.copy_merge_params(query), headers, wire.MAX_TOKEN)
        except httpx.TransportError as exc:
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
