"""The HTTP client of registry requests (httpx), its one deadline setting, and the values `Session`
passes around (URL, Headers) and its errors (TransportError, InvalidURL).

httpx does the HTTP: kept-alive connections (one whose server closed it, or sent anything while
it sat idle, is never reused), chunked and counted bodies, TLS, and proxies from the environment
as httpx reads them (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, in either case): an https://
proxy is spoken to over TLS before anything, its credentials included, is sent to it; a socks5://
or socks5h:// proxy needs the `socks` extra, and without it every request fails with a
RegistryError naming the variable and the fix (the proxy is never bypassed). httpx never sends a request twice; a
request is sent again only by `Session`, and only when the server cannot have received it or
when it is a GET or HEAD.

TLS is verified against the system's certificate store (OpenSSL's default locations, which honour
SSL_CERT_FILE and SSL_CERT_DIR), read on the first https:// connection of a client.

The deadline, `deadline=` else FLYTE_IMAGES_REGISTRY_TIMEOUT else 20 s, is one number of seconds,
T, applied as follows:

- every request, checks and pushes alike: connecting (the TLS handshake and a proxy's tunnel
  included) takes at most T; each piece of a request body (64 KiB) is taken by the connection
  within T; the answer starts within T of the request's last piece, and each next bytes of it
  come within T of the ones before. So a request that stalls (nothing moves for T) fails, while
  one that keeps moving, such as a long upload or download on a slow link, is never cut off for
  its length alone. A request whose connection broke after it was sent is sent again only when
  it is a GET or HEAD (see session.py);
- an existence check (and reading the platforms of, or writing, a multi-platform index) also
  ends within T in all, its retries, redirects and token requests included, so a server that
  drips bytes cannot hold a build;
- a read or write of an image's parts (`Registry.manifest`, `put_manifest`...) ends within T in
  all too, except a blob upload (PUT of a layer or config, whatever its size) and the reading of
  a streamed blob, which are bounded only by the per-phase limits above (the start of a streamed
  blob's answer is within T in all).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from .._errors import ConfigError, RegistryError
from .._version import __version__

USER_AGENT = f"flyte-images/{__version__}"
DEADLINE_ENV = "FLYTE_IMAGES_REGISTRY_TIMEOUT"
DEFAULT_DEADLINE = 20.0
PIECE = 1 << 16  # a request body is handed to the connection in pieces this big (see the write limit)
_PROXY_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")

# The injection point of `Session(transport=...)`: a fake registry, or a wrapper around
# httpx.AsyncHTTPTransport. A transport handed in replaces the network and the proxy settings.
HTTPTransport = httpx.AsyncBaseTransport


def deadline_seconds(deadline: float | None) -> float:
    """The deadline T (see the module's docstring): the argument, else the environment, else the
    default of 20 s. Raises ConfigError naming a value that is not a number of seconds above 0."""
    if deadline is not None:
        source, raw = "deadline", str(deadline)
    else:
        source, raw = DEADLINE_ENV, os.environ.get(DEADLINE_ENV, "").strip()
        if not raw:
            return DEFAULT_DEADLINE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{source}={raw!r} is not a number of seconds above 0; give one like {source}=30, or leave it "
            f"unset for the default of {DEFAULT_DEADLINE:g} s"
        )
    return value


class TransportError(Exception):
    """The request got no answer: no connection, a broken one, TLS refused or a timeout.
    `sent` says whether the server may have received the request (then only a GET or HEAD may
    be sent again)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class TimedOut(TransportError):
    """Nothing moved for the deadline's length: no connection, no byte of the answer, or the
    connection took no byte of the request."""


class InvalidURL(ValueError):
    """An address that is not an absolute http(s) URL."""


@dataclass(frozen=True)
class URL:
    """An absolute http(s) URL. Credentials written into one (user:pass@) are never kept."""

    scheme: str
    host: str
    port: int | None
    path: str
    query: str = ""

    @classmethod
    def parse(cls, text: str) -> URL:
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"{text[:80]!r} is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidURL(f"{text[:80]!r} is not an http(s) URL")
        if any(c in text for c in "\r\n\t "):
            raise InvalidURL(f"{text[:80]!r} holds whitespace")
        return cls(parts.scheme, parts.hostname, port, parts.path or "/", parts.query)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port or (443 if self.scheme == "https" else 80)

    @property
    def target(self) -> str:
        """The request target: path and query."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def join(self, location: str) -> URL:
        """Where `location` (absolute or relative, as in a Location header) points from here."""
        return URL.parse(urllib.parse.urljoin(str(self), location))

    def with_params(self, params: Mapping[str, str]) -> URL:
        query = urllib.parse.parse_qsl(self.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k not in params] + list(params.items())
        return URL(self.scheme, self.host, self.port, self.path, urllib.parse.urlencode(query))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


class Headers(Mapping[str, str]):
    """Answer headers, by case-insensitive name; a repeated header's values joined by ", "."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            self._values[key] = f"{self._values[key]}, {value}" if key in self._values else value

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({sorted(self._values)})"


class _SystemStore(ssl.SSLContext):
    """Verification against the system's certificate store, read when the first TLS connection
    is set up: reading it takes about 20 ms, which a client that only speaks plain HTTP (to a
    loopback registry) never pays. Were it never read, every certificate would be refused."""

    _loaded = False

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if not self._loaded:
            self.load_default_certs()
            self._loaded = True
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def open_client(*, timeout: float, keep: int, transport: HTTPTransport | None = None) -> httpx.AsyncClient:
    """The client of one session: the per-phase limits of `timeout` seconds (module docstring),
    `keep` idle connections kept alive, any number open (callers bound their concurrency, and a
    request never waits for another's connection). Raises RegistryError for a proxy variable
    that cannot be used."""
    try:
        return httpx.AsyncClient(
            transport=transport,
            verify=_SystemStore(ssl.PROTOCOL_TLS_CLIENT),
            trust_env=True,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=keep),
            # Bodies are read as sent, never decoded: blobs are checked against their digests.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
    except ImportError:  # httpx's only one here: a SOCKS proxy without the `socks` extra
        found = _proxy_setting(lambda value: _scheme(value).startswith("socks"))
        if found is None:
            raise
        name, shown = found
        raise RegistryError(
            f"{name} names a SOCKS proxy ({shown}), which registry requests can use only with the socks extra: "
            f"pip install 'flyte-images[socks]', or unset {name}"
        ) from None
    except (ValueError, TypeError, httpx.InvalidURL):
        name, shown = _proxy_setting(lambda value: not _usable(value)) or ("NO_PROXY", "its value")
        raise RegistryError(
            f"{name} ({shown}) cannot be used as a proxy setting; give a proxy address like "
            f"http://proxy.example:3128 (http, https, socks5 or socks5h), or unset {name}"
        ) from None


def _proxy_setting(faulty: Callable[[str], bool]) -> tuple[str, str] | None:
    """The first proxy variable whose value is `faulty`, and that value as it may be shown: its
    scheme, host and port, never its credentials."""
    for upper in _PROXY_NAMES:
        for name in (upper.lower(), upper):
            value = os.environ.get(name, "").strip()
            if value and faulty(value):
                parts = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
                try:
                    port = f":{parts.port}" if parts.port else ""
                except ValueError:
                    port = ""
                return name, repr(f"{parts.scheme}://{parts.hostname or ''}{port}"[:80])
    return None


def _scheme(value: str) -> str:
    return value.partition("://")[0].lower() if "://" in value else "http"


def _usable(value: str) -> bool:
    try:
        httpx.Proxy(value if "://" in value else f"http://{value}")
    except (ValueError, TypeError, httpx.InvalidURL):
        return False
    return True


class Chunked(Protocol):
    """A request body too big to hold: `size` bytes, read from the start by each call of
    `chunks` (a request sent again, after a redirect or a challenge, reads it again)."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


def body_size(content: bytes | Chunked) -> int:
    return len(content) if isinstance(content, bytes) else content.size


def request_body(content: bytes | Chunked | None) -> bytes | AsyncIterator[bytes] | None:
    """`content` as httpx is to send it: in pieces when it is longer than one, so the write limit
    applies to each piece (a long upload that keeps moving never trips it)."""
    if isinstance(content, bytes):
        return content if len(content) <= PIECE else _pieces([content])
    if content is None:
        return None
    return _read(content)


async def _pieces(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if len(chunk) <= PIECE:
            yield chunk
            continue
        view = memoryview(chunk)
        for start in range(0, len(view), PIECE):
            yield bytes(view[start : start + PIECE])


async def _read(source: Chunked) -> AsyncIterator[bytes]:
    """The chunks of `source` as they are sent, each read in a worker thread (they come from a
    file: the event loop never waits for the disk). Exactly `size` bytes, or a RegistryError
    before any byte more is sent: the request says its length before its body."""
    chunks, sent = source.chunks(), 0
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            sent += len(chunk)
            if sent > source.size:
                break
            async for piece in _pieces([chunk]):
                yield piece
    finally:
        # Cancelled while a worker reads the next chunk, the source is still running there: it
        # is then left to finish on its own (closing it would raise).
        with contextlib.suppress(ValueError):
            getattr(chunks, "close", lambda: None)()
    if sent != source.size:
        raise RegistryError(
            f"a blob being uploaded gave {'more' if sent > source.size else f'only {sent}'} of the {source.size} "
            "bytes it was said to hold; it changed while it was sent: build again"
        )


def failure(exc: Exception, timeout: float) -> TransportError | InvalidURL:
    """What went wrong, in words, for an exception httpx raised; never the server's own bytes."""
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the answer",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a connection",
        }.get(type(exc), "waiting")
        return TimedOut(
            f"nothing moved for {timeout:g} s while {phase} (the limit is {DEADLINE_ENV}; set it higher to "
            "wait longer)",
            sent=not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return InvalidURL(f"not an http(s) URL ({type(exc).__name__})")
    if isinstance(exc, httpx.ProxyError):
        # The proxy's refusal is its status line: cut short, as any server-chosen text.
        return TransportError(f"the proxy refused the connection ({str(exc)[:60]!r})", sent=False)
    if isinstance(exc, httpx.ConnectError):
        verify = _cause(exc, ssl.SSLCertVerificationError)
        if verify is not None:
            return TransportError(
                f"TLS certificate not trusted ({verify.verify_message}); add its CA to the system store or "
                "SSL_CERT_FILE",
                sent=False,
            )
        return TransportError(f"the connection failed ({_cause_text(exc)})", sent=False)
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if text.startswith("Server disconnected"):
            return TransportError("the connection closed before an answer came", sent=True)
        if text.startswith("peer closed connection"):
            return TransportError("the connection closed before the end of the answer", sent=True)
        # What the server sent is not repeated: it may be anything (a banner, a credential).
        return TransportError("the answer is not HTTP/1.1 (RemoteProtocolError)", sent=True)
    return TransportError(f"the connection broke ({_cause_text(exc)})", sent=True)


def _cause(exc: BaseException, kind: type[ssl.SSLCertVerificationError]) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _cause_text(exc: BaseException) -> str:
    """The operating system's words for a failed connection (`[Errno 111] Connection refused`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and str(seen):
            return str(seen)[:200]
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__
