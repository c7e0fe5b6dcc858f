"""Registry HTTP: TLS verified against the system's store (SSL_CERT_FILE and SSL_CERT_DIR
honoured), kept-alive connections, chunked bodies, proxies from the environment with NO_PROXY.

The servers are loopback fakes (one plain, one TLS with a certificate no CA vouches for); the
requests go through the registry session the checks and pushes use.
"""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography import x509
from registry_support import _serve, reply, self_signed_files

from flyte_images._registry.session import Session
from flyte_images._registry.transport import TransportError, parse_url


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive, as registries do
    connections: ClassVar[set[int]] = set()

    def do_GET(self) -> None:
        _Hello.connections.add(self.client_address[1])
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hel", b"lo"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        reply(self, 200, b"hello")

    def log_message(self, *_args: object) -> None:
        pass


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA vouches for (it is its own)."""
    address = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    ca = x509.BasicConstraints(ca=True, path_length=None)
    return self_signed_files(folder, "registry", "registry.test", (address, False), (ca, True))


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Path]]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    cert, key = _certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    (plain, plain_port), (secure, secure_port) = _serve(_Hello), _serve(_Hello, tls)
    yield f"http://127.0.0.1:{plain_port}/", f"https://127.0.0.1:{secure_port}/", cert
    for server in (plain, secure):
        server.shutdown()
        server.server_close()


def _get(*urls: str) -> list[tuple[int, bytes]]:
    """GET each URL in turn through one registry session: status and body of each."""

    async def run() -> list[tuple[int, bytes]]:
        async with Session() as session:
            answers = [await session.read("GET", parse_url(url), {}, 1 << 20) for url in urls]
        return [(answer.status, answer.content) for answer in answers]

    return asyncio.run(run())


def test_plain_http_needs_no_certificates(servers: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _secure, _cert = servers
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/bundle.pem")
    assert _get(plain) == [(200, b"hello")]


def test_https_verifies_the_certificate(servers: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _plain, secure, cert = servers
    with pytest.raises(TransportError, match=r"certificate not trusted.*SSL_CERT_FILE"):
        _get(secure)  # a certificate nobody vouches for is refused
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert _get(secure) == [(200, b"hello")]


def test_https_trusts_a_certificate_folder(
    servers: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plain, secure, cert = servers
    folder = tmp_path / "certs"
    folder.mkdir()
    # OpenSSL finds a CA in a folder by the hash of its subject name, as `c_rehash` names them.
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(cert)], capture_output=True, text=True, check=True
    ).stdout.strip()
    os.symlink(cert, folder / f"{subject_hash}.0")
    monkeypatch.setenv("SSL_CERT_DIR", str(folder))
    assert _get(secure) == [(200, b"hello")]


def test_connections_are_kept_alive_and_chunked_bodies_read(servers: tuple[str, str, Path]) -> None:
    plain, _secure, _cert = servers
    _Hello.connections.clear()
    assert _get(plain, plain, plain, plain + "chunked") == [(200, b"hello")] * 4
    assert len(_Hello.connections) == 1  # one connection (one client port) served all four


def test_a_proxy_from_the_environment_is_used_and_no_proxy_honoured(
    servers: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, _secure, _cert = servers
    seen: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            reply(self, 200, b"proxied")

        def log_message(self, *_args: object) -> None:
            pass

    proxy, port = _serve(Proxy)
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        target = plain.replace("127.0.0.1", "registry.test")
        assert _get(target) == [(200, b"proxied")]
        assert seen == [target]  # a plain-HTTP request through a proxy names the whole URL
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert _get(plain) == [(200, b"hello")]
        assert seen == [target]
    finally:
        proxy.shutdown()
        proxy.server_close()
