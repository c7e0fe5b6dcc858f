"""HTTP/1.1 to registries on the standard library (`http.client`), for `Session`.

A registry conversation is a handful of small requests (existence checks, manifests, a few
blob uploads) plus, now and then, one long streamed layer. `http.client` does all of it: kept-
alive connections, chunked bodies, TLS with the system's certificate store (which honours
SSL_CERT_FILE and SSL_CERT_DIR), CONNECT tunnels for proxies. It costs a few milliseconds to
import where a general-purpose async HTTP stack costs tens, and every build that talks to a
registry pays that at start-up.

Requests block, so `Session` runs each one on a worker thread (`in_thread`) and awaits it: the
event loop keeps many checks in flight, the threads do the waiting. Workers are daemon threads,
so a registry that never answers cannot hold the process at exit; they are reused, so a batch
of checks starts one thread per concurrent request, not one per request.

Proxies follow the usual variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, in either
case); they are read only when one is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import os
import queue
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .._version import __version__

USER_AGENT = f"flyte-images/{__version__}"
CHUNK = 1 << 20
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
# A kept-alive connection the server closed meanwhile fails on its next use with one of these,
# before any answer: such a request is sent once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

T = TypeVar("T")


class TransportError(Exception):
    """The request got no answer: no connection, a broken one, TLS refused or a timeout."""


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


class Response:
    """An answer whose body is still to read (blocking reads: call them on a worker thread)."""

    def __init__(self, status: int, headers: Headers, url: URL, body: Callable[[int], bytes] | bytes = b"") -> None:
        self.status, self.headers, self.url = status, headers, url
        self._read = body if callable(body) else _reader(body)

    def read(self, amount: int = CHUNK) -> bytes:
        """Up to `amount` bytes of the body as they arrive; b"" at its end."""
        return self._read(amount)

    def close(self) -> None:
        """Done with it: a connection read to the end goes back to the pool."""


def _reader(data: bytes) -> Callable[[int], bytes]:
    view = memoryview(data)
    position = 0

    def read(amount: int) -> bytes:
        nonlocal position
        piece = bytes(view[position : position + amount])
        position += len(piece)
        return piece

    return read


class _Pooled(Response):
    def __init__(self, transport: HTTPTransport, key: tuple[Any, ...], conn: http.client.HTTPConnection,
                 sock: socket.socket | None, answer: http.client.HTTPResponse, url: URL) -> None:  # fmt: skip
        super().__init__(answer.status, Headers(answer.getheaders()), url, self._read_answer)
        self._transport, self._key, self._conn, self._answer = transport, key, conn, answer
        self._sock = sock
        self._closed = False

    def _read_answer(self, amount: int) -> bytes:
        try:
            piece = self._answer.read1(amount) if amount else b""
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise TransportError(_describe(exc)) from None
        if not piece and amount and self._answer.length:
            self._conn.close()  # read1 reports a cut-off body as its end; it is not
            raise TransportError(f"the connection closed {self._answer.length} bytes before the end of the answer")
        return piece

    def close(self) -> None:
        if self._closed:
            return  # a connection goes back to the pool once
        self._closed = True
        # Read to its end (http.client leaves a counted body "open" after its last byte), the
        # connection serves the next request, unless the server said it will close it.
        done = self._answer.isclosed() or self._answer.length == 0
        if done and not self._answer.will_close:
            self._answer.close()
            self._transport._give_back(self._key, self._conn)
            return
        # Given up half way (a deadline passed): a worker thread may be blocked reading this
        # answer. Shutting the socket down ends that read at once; the close then follows it.
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._answer.close()
        self._conn.close()


class HTTPTransport:
    """Kept-alive connections by origin, shared by the threads of one session."""

    def __init__(self, *, timeout: float, keep: int = 16) -> None:
        self._timeout = timeout
        self._keep = keep
        self._idle: dict[tuple[Any, ...], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._proxies = _proxies_from_env() if any(os.environ.get(v) for v in _PROXY_VARIABLES) else {}

    def send(self, method: str, url: URL, headers: Mapping[str, str], content: bytes | None = None) -> Response:
        """Send one request and return the answer with its body unread. Raises TransportError."""
        key = self._route(url)
        for attempt in (1, 2):
            conn, reused = self._connection(key)
            try:
                conn.request(method, self._target(key, url), body=content, headers=self._headers(key, headers))
                sock = conn.sock  # getresponse forgets it when the server will close the connection
                answer = conn.getresponse()
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise TransportError(_describe(exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise TransportError(_describe(exc)) from None
            return _Pooled(self, key, conn, sock, answer, url)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _give_back(self, key: tuple[Any, ...], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self._keep:
                conns.append(conn)
                return
        conn.close()

    def _connection(self, key: tuple[Any, ...]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            conns = self._idle.get(key)
            if conns:
                return conns.pop(), True
        scheme, host, port, proxy = key
        if proxy is None:
            if scheme == "https":
                return http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._context()), False
            return http.client.HTTPConnection(host, port, timeout=self._timeout), False
        via = URL.parse(proxy)
        auth = _proxy_auth(proxy)
        if scheme == "https":
            conn = http.client.HTTPSConnection(via.host, via.origin[2], timeout=self._timeout, context=self._context())
            conn.set_tunnel(host, port, headers=auth)
            return conn, False
        return http.client.HTTPConnection(via.host, via.origin[2], timeout=self._timeout), False

    def _context(self) -> ssl.SSLContext:
        # Made on the first https:// request only: loading the certificate store takes ~20 ms.
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _route(self, url: URL) -> tuple[Any, ...]:
        scheme, host, port = url.origin
        return (scheme, host, port, self._proxy_for(url))

    def _proxy_for(self, url: URL) -> str | None:
        if not self._proxies:
            return None
        import urllib.request  # only when a proxy variable is set

        if urllib.request.proxy_bypass_environment(url.host, self._proxies):  # type: ignore[attr-defined]
            return None
        return self._proxies.get(url.scheme) or self._proxies.get("all")

    @staticmethod
    def _target(key: tuple[Any, ...], url: URL) -> str:
        scheme, _host, _port, proxy = key
        # A plain-HTTP request through a proxy names the whole URL; a tunnel carries the path.
        return str(url) if proxy is not None and scheme == "http" else url.target

    @staticmethod
    def _headers(key: tuple[Any, ...], headers: Mapping[str, str]) -> dict[str, str]:
        sent = {"User-Agent": USER_AGENT, **headers}
        scheme, _host, _port, proxy = key
        if proxy is not None and scheme == "http":
            sent.update(_proxy_auth(proxy))
        return sent


def _proxies_from_env() -> dict[str, str]:
    import urllib.request

    found = {}
    for scheme, value in urllib.request.getproxies_environment().items():
        address = value if scheme == "no" or "://" in value else f"http://{value}"
        try:
            if scheme != "no":
                URL.parse(address)
        except InvalidURL:
            continue  # an unusable setting is no proxy, as for other HTTP clients
        found[scheme] = address
    return found


def _proxy_auth(proxy: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(proxy)
    if not parts.username:
        return {}
    pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.HTTPException) and not isinstance(exc, http.client.RemoteDisconnected):
        # What the server sent is not repeated: it may be anything (a banner, a credential).
        return f"the answer is not HTTP/1.1 ({type(exc).__name__})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); add its CA to the system store or SSL_CERT_FILE"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Workers:
    """Daemon threads that run blocking calls; one is started whenever none is free."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._free = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            start = self._free == 0
            if not start:
                self._free -= 1
        if start:
            threading.Thread(target=self._work, name="flyte-images-http", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._free += 1


_WORKERS = _Workers()


def in_thread(call: Callable[[], T], *, unused: Callable[[T], None] | None = None) -> asyncio.Future[T]:
    """`call()` on a worker thread, as a future of the running loop. When the future was
    cancelled (a deadline passed) before the call returned, `unused` gets what it returned."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.cancelled():
            if ok and unused is not None:
                unused(value)
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def job() -> None:
        try:
            value: Any = call()
            ok = True
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            if ok and unused is not None:
                unused(value)

    _WORKERS.submit(job)
    return future
