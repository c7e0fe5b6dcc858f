"""The HTTP client of registry requests (httpx), its deadline, request bodies and errors.

httpx does the HTTP: kept-alive connections, chunked and counted bodies, TLS verified against the
system's store (SSL_CERT_FILE and SSL_CERT_DIR honoured) and proxies from the environment as
httpx reads them; a SOCKS proxy without the `socks` extra fails every request with a
RegistryError naming the variable (the proxy is never bypassed). httpx never sends a request
twice: only `Session` does, and only when the server cannot have received it or for a GET or HEAD.

The deadline T (`deadline=`, else FLYTE_IMAGES_REGISTRY_TIMEOUT, else 20 s) bounds each phase of
every request: connecting (TLS and a proxy's tunnel included), each 64 KiB piece of a body being
taken, the start of the answer and each next bytes of it. A request fails once nothing moves for
T, never for its length alone. `Session` also bounds each operation as a whole by T (README:
"Registries").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Protocol

import httpx

from .._errors import ConfigError, RegistryError
from .._version import __version__

DEADLINE_ENV = "FLYTE_IMAGES_REGISTRY_TIMEOUT"
DEFAULT_DEADLINE = 20.0
PIECE = 1 << 16  # a request body is handed to the connection in pieces this big (see the write limit)
_PROXY_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")

# The injection point of `Registry(transport=...)`: a fake registry, or a wrapper around
# httpx.AsyncHTTPTransport. A transport handed in replaces the network and the proxy settings.
HTTPTransport = httpx.AsyncBaseTransport


def deadline_seconds(deadline: float | None) -> float:
    """T: the argument, else the environment, else the default. Raises ConfigError naming a value
    that is not a number of seconds above 0."""
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
    """The request got no answer (no connection, a broken one, TLS refused, a timeout); `sent`:
    the server may have received it."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class TimedOut(TransportError):
    """Nothing moved for the deadline's length."""


class InvalidURL(ValueError):
    """An address that is not an absolute http(s) URL."""


def parse_url(text: str) -> httpx.URL:
    """`text` as an absolute http(s) URL, without credentials written into it (user:pass@): httpx
    would send those as Basic auth, and a redirect's or token service's are not ours to send."""
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InvalidURL(f"{text[:80]!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidURL(f"{text[:80]!r} is not an http(s) URL")
    if any(c in text for c in "\r\n\t "):
        raise InvalidURL(f"{text[:80]!r} holds whitespace")
    # Parsed again only when there are credentials to drop (each parse costs every request).
    return url.copy_with(username=None, password=None) if url.userinfo else url


def join(url: httpx.URL, location: str) -> httpx.URL:
    """Where `location` (absolute or relative, as in a Location header) points from `url`."""
    return parse_url(urllib.parse.urljoin(str(url), location))


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port  # httpx leaves out a scheme's default port


def netloc(url: httpx.URL) -> str:
    return url.netloc.decode("ascii", "replace")


class _SystemStore(ssl.SSLContext):
    """Verification against the system's certificate store, read when the first TLS connection
    is set up: reading it takes about 20 ms, which a client that only speaks plain HTTP (to a
    loopback registry) never pays."""

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
    """The client of one session: per-phase limits of `timeout` s, `keep` idle connections kept
    alive, any number open. Raises RegistryError for a proxy variable that cannot be used."""
    try:
        return httpx.AsyncClient(
            transport=transport,
            verify=_SystemStore(ssl.PROTOCOL_TLS_CLIENT),
            trust_env=True,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=keep),
            # Bodies are read as sent, never decoded: blobs are checked against their digests.
            headers={"User-Agent": f"flyte-images/{__version__}", "Accept-Encoding": "identity"},
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


def request_body(content: bytes | Chunked | None) -> bytes | AsyncIterator[bytes] | None:
    """`content` as httpx is to send it: in pieces when it is longer than one, so the write limit
    applies to each piece (a long upload that keeps moving never trips it)."""
    if isinstance(content, bytes):
        return content if len(content) <= PIECE else _pieces([content])
    return None if content is None else _read(content)


async def _pieces(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), PIECE):
            yield bytes(view[start : start + PIECE])


async def _read(source: Chunked) -> AsyncIterator[bytes]:
    """The chunks of `source`, each read in a worker thread (the event loop never waits for the
    disk): exactly `size` bytes, the length the request states, else a RegistryError."""
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
    causes = list(_chain(exc))
    # The operating system's words for a failed connection (`[Errno 111] Connection refused`).
    cause = next((str(e)[:200] for e in causes if isinstance(e, OSError) and str(e)), type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        for verify in causes:
            if isinstance(verify, ssl.SSLCertVerificationError):
                return TransportError(
                    f"TLS certificate not trusted ({verify.verify_message}); add its CA to the system store or "
                    "SSL_CERT_FILE",
                    sent=False,
                )
        return TransportError(f"the connection failed ({cause})", sent=False)
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if text.startswith("Server disconnected"):
            return TransportError("the connection closed before an answer came", sent=True)
        if text.startswith("peer closed connection"):
            return TransportError("the connection closed before the end of the answer", sent=True)
        # What the server sent is not repeated: it may be anything (a banner, a credential).
        return TransportError("the answer is not HTTP/1.1 (RemoteProtocolError)", sent=True)
    return TransportError(f"the connection broke ({cause})", sent=True)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__
