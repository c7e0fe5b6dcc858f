"""Registry HTTP against proxies and servers that misbehave: an https:// proxy gets TLS before
anything else, a SOCKS proxy is used or refused (never bypassed), a POST the server may have
received is never sent again, bytes arriving on an idle kept-alive connection are never taken
for the next answer, and an upload that stalls fails after FLYTE_IMAGES_REGISTRY_TIMEOUT while
one that keeps moving may take longer.

The proxies and misbehaving servers are loopback fakes (no real proxy or registry can be made to
misbehave on demand); the image reached through the SOCKS proxy lives in a real registry
(Debian's docker-registry) on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import http.server
import ipaddress
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from registry_support import MANIFEST_TYPE, FakeServer, Seeded, reply, seeded_registry, self_signed_files, sha256

from flyte_images import RegistryError
from flyte_images._registry import Existence, Reference, Registry, check_many
from flyte_images._registry.record import PlatformCache

SECRET = "proxy-pw-4b9e1"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def check(refs: list[str], platforms: list[str] | None = None, **kw: object) -> list[Existence]:
    return asyncio.run(check_many(refs, platforms, platform_cache=PlatformCache(None), **kw))  # type: ignore[arg-type]


def push(host: str, data: bytes, **options: object) -> bool:
    """Upload `data` as a blob of host/team/app, as the append path does."""

    async def run() -> bool:
        async with Registry(**options) as registry:  # type: ignore[arg-type]
            return await registry.push_blob(Reference(host, "team/app", "v1"), data, sha256(data))

    return asyncio.run(run())


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def real() -> Iterator[Seeded]:
    with seeded_registry() as seeded:
        yield seeded


class Listener:
    """A loopback TCP server handing each connection to `serve` on a thread of its own."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self._serve = serve
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):
            conn.settimeout(10)
            self._serve(conn)

    def close(self) -> None:
        self._sock.close()


def _exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = conn.recv(size - len(data))
        if not piece:
            raise ValueError("closed early")
        data += piece
    return data


def test_an_https_proxy_gets_tls_before_the_connect_and_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake https:// proxy records the first bytes of each connection as they come off the
    wire, then speaks TLS, records the CONNECT request sent inside it and refuses it."""
    address = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert, key = self_signed_files(tmp_path, "proxy", "proxy.test", (address, False))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    first: list[bytes] = []
    connects: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        first.append(conn.recv(16, socket.MSG_PEEK))
        if not first[-1].startswith(b"\x16"):  # not a TLS handshake record: nothing more to see
            return
        with tls.wrap_socket(conn, server_side=True) as inside:
            head = b""
            while b"\r\n\r\n" not in head and (piece := inside.recv(4096)):
                head += piece
            connects.append(head)
            inside.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    proxy = Listener(serve)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the proxy's certificate is trusted
        monkeypatch.setenv("HTTPS_PROXY", f"https://alice:{SECRET}@127.0.0.1:{proxy.port}")
        (found,) = check(["registry.test/team/app:v1"], backoff=0.01)
    finally:
        proxy.close()
    assert first and all(head.startswith(b"\x16\x03") for head in first), first  # a TLS ClientHello first
    assert connects and connects[0].startswith(b"CONNECT registry.test:443 HTTP/1.1\r\n")
    login = base64.b64encode(f"alice:{SECRET}".encode())
    assert b"Proxy-Authorization: Basic " + login in connects[0]  # sent, but only inside TLS
    assert found.state == "unknown" and "registry.test could not be reached: the proxy refused" in found.reason
    assert SECRET not in found.reason and login.decode() not in found.reason


class Socks5Relay:
    """A fake SOCKS5 proxy (RFC 1928, with RFC 1929 logins) that records who logged in and where
    to, then relays the connection there."""

    def __init__(self) -> None:
        self.logins: list[tuple[str, str]] = []
        self.targets: list[str] = []
        self._listener = Listener(self._serve)
        self.port = self._listener.port

    def _serve(self, conn: socket.socket) -> None:
        _version, count = _exact(conn, 2)
        if 2 in _exact(conn, count):  # username and password offered
            conn.sendall(b"\x05\x02")
            _version, size = _exact(conn, 2)
            user = _exact(conn, size).decode()
            (size,) = _exact(conn, 1)
            self.logins.append((user, _exact(conn, size).decode()))
            conn.sendall(b"\x01\x00")
        else:
            conn.sendall(b"\x05\x00")
        _version, _command, _reserved, kind = _exact(conn, 4)
        if kind == 1:
            host = socket.inet_ntoa(_exact(conn, 4))
        elif kind == 3:
            host = _exact(conn, _exact(conn, 1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, _exact(conn, 16))
        port = int.from_bytes(_exact(conn, 2), "big")
        self.targets.append(f"{host}:{port}")
        with socket.create_connection((host, port), timeout=10) as upstream:
            conn.sendall(b"\x05\x00\x00\x01" + bytes(6))
            back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
            back.start()
            _pipe(conn, upstream)
            back.join(10)

    def close(self) -> None:
        self._listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


def test_a_socks_proxy_carries_the_requests(real: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("socksio", reason="the socks extra (httpx[socks]) is not installed")
    relay = Socks5Relay()
    try:
        monkeypatch.setenv("ALL_PROXY", f"socks5h://alice:{SECRET}@127.0.0.1:{relay.port}")
        (found,) = check([real.reference], ["linux/amd64"])
    finally:
        relay.close()
    assert found.state == "exists", found.reason
    host = real.reference.split("/")[0]
    assert relay.targets and set(relay.targets) == {host}  # every request went through the proxy
    assert set(relay.logins) == {("alice", SECRET)}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ALL_PROXY", "socks5h://alice:{secret}@127.0.0.1:{port}", "ALL_PROXY names a SOCKS proxy"),
        ("all_proxy", "socks5://alice:{secret}@127.0.0.1:{port}", "all_proxy names a SOCKS proxy"),
        ("HTTP_PROXY", "ftp://alice:{secret}@127.0.0.1:{port}", "HTTP_PROXY ('ftp://127.0.0.1:"),
    ],
)
def test_a_proxy_that_cannot_be_used_is_refused_never_bypassed(
    name: str,
    value: str,
    expected: str,
    real: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the socks extra (its module hidden here), a SOCKS proxy fails every request with
    the variable and the fix named; so does a proxy address of an unknown scheme. The upload's
    two first requests (started together) both fail, and only one failure is reported."""
    monkeypatch.setitem(sys.modules, "socksio", None)
    relay = Socks5Relay()
    try:
        monkeypatch.setenv(name, value.format(secret=SECRET, port=relay.port))
        (found,) = check([real.reference])
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            with pytest.raises(RegistryError) as raised:
                push(real.reference.split("/")[0], b"layer")
            pushed = str(raised.value)
            del raised  # its traceback holds the upload's frames: let them go
            gc.collect()
    finally:
        relay.close()
    assert found.state == "unknown" and expected in found.reason, found.reason
    assert expected in pushed
    fix = "pip install 'flyte-images[socks]'" if "SOCKS" in expected else f"or unset {name}"
    assert fix in found.reason
    for text in (found.reason, pushed):
        assert SECRET not in text and "alice" not in text
    assert relay.targets == []
    assert "never retrieved" not in caplog.text  # no second report, on stderr, of the same failure


def test_a_post_is_never_sent_again_while_a_head_is_retried() -> None:
    """A fake that closes every connection once it has read the request, answering nothing (as a
    registry or proxy that fails after taking the request)."""

    def hang_up(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.close_connection = True

    async def start_upload(registry: Registry, ref: Reference) -> None:
        await registry.push_blob(ref, b"layer", sha256(b"layer"), ask=False)  # the POST that starts it

    async def ask(registry: Registry, ref: Reference) -> None:
        await registry.has_blob(ref, sha256(b"layer"))  # a HEAD

    with FakeServer(hang_up) as fake:
        for work, method, attempts in ((start_upload, "POST", 1), (ask, "HEAD", 4)):

            async def run(work: Callable[[Registry, Reference], Awaitable[None]] = work) -> None:
                async with Registry(backoff=0.01) as registry:
                    await work(registry, Reference(fake.host, "team/app", "v1"))

            fake.seen.clear()
            with pytest.raises(RegistryError, match=f"{fake.host} could not be reached"):
                asyncio.run(run())
            # A POST may have started an upload: sending it again would start another. A HEAD
            # changes nothing: it is retried (retries=4).
            assert [seen.method for seen in fake.seen] == [method] * attempts


def test_bytes_on_an_idle_kept_alive_connection_are_not_the_next_answer() -> None:
    """A fake registry on kept-alive connections that, a moment after answering for `here`,
    sends a second answer nobody asked for (as a confused proxy might) on the idle connection."""
    digest = sha256(b"{}")
    stray = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {MANIFEST_TYPE}\r\nDocker-Content-Digest: {digest}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if not handler.path.endswith("/manifests/here"):
            reply(handler, 404)
            return
        reply(handler, 200, headers={"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": digest})

        def unasked() -> None:
            with contextlib.suppress(OSError):
                handler.wfile.write(stray)

        threading.Timer(0.2, unasked).start()

    async def run(host: str) -> tuple[Existence, Existence]:
        async with Registry(platform_cache=PlatformCache(None)) as client:
            here = await client.check(f"{host}/team/app:here")
            await asyncio.sleep(1.0)  # the stray answer arrives meanwhile
            return here, await client.check(f"{host}/team/app:gone")

    with FakeServer(answer, keep_alive=True) as fake:
        here, gone = asyncio.run(run(fake.host))
    assert here.state == "exists"
    assert gone.state == "missing", gone  # the registry's own answer, not the stray 200


def uploads(mode: str, release: threading.Event) -> FakeServer:
    """A fake registry that takes blob uploads: `slow` reads each one at 1 MiB per 0.1 s, then
    answers 201; `stall-mid-body` reads nothing of the body; `stall-after-body` reads it whole
    and never answers. The stalling ones wait until `release` is set."""

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.command == "POST":
            reply(handler, 202, headers={"Location": "/v2/team/app/blobs/uploads/u1"})
        elif handler.command != "PUT":
            reply(handler, 404)
        elif mode == "stall-mid-body":
            release.wait(60)
        else:
            left = int(handler.headers["Content-Length"])
            while left > 0 and (piece := handler.rfile.read(min(1 << 20, left))):
                left -= len(piece)
                if mode == "slow":
                    time.sleep(0.1)
            if mode == "stall-after-body":
                release.wait(60)
            else:
                reply(handler, 201)

    return FakeServer(answer)


def test_an_upload_fails_when_it_stalls_not_for_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    try:
        with uploads("slow", release) as slow:
            start = time.monotonic()
            assert push(slow.host, os.urandom(40 << 20), deadline=3) is True  # moving all along
            assert time.monotonic() - start > 3  # longer than the deadline in all
        monkeypatch.setenv("FLYTE_IMAGES_REGISTRY_TIMEOUT", "2")
        for mode, size in (("stall-after-body", 1 << 20), ("stall-mid-body", 64 << 20)):
            with uploads(mode, release) as stalled:
                start = time.monotonic()
                with pytest.raises(RegistryError) as raised:
                    push(stalled.host, os.urandom(size))
                elapsed = time.monotonic() - start
                puts = [seen.method for seen in stalled.seen].count("PUT")
            message = str(raised.value)
            assert f"{stalled.host} stopped responding: nothing moved for 2 s" in message, message
            assert "FLYTE_IMAGES_REGISTRY_TIMEOUT" in message
            assert elapsed < 10, (mode, elapsed)  # the setting's 2 s, not a fixed minute
            assert puts == 1  # a PUT the registry may have taken is not sent again
    finally:
        release.set()
