"""The registry client sets up TLS only for https:// URLs, and then verifies certificates."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from registry_support import _serve

from flyte_images._registry.session import new_client


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *_args: object) -> None:
        pass


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    cert, key = _certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    (plain, plain_port), (secure, secure_port) = _serve(_Hello), _serve(_Hello, tls)
    yield f"http://127.0.0.1:{plain_port}/", f"https://127.0.0.1:{secure_port}/", cert
    for server in (plain, secure):
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, bool]:
    async def run() -> tuple[int, bool]:
        async with new_client(timeout=5) as client:
            answer = await client.get(url)
            secure = client._transport
            return answer.status_code, getattr(secure, "_real", None) is not None

    return asyncio.run(run())


def test_plain_http_never_sets_up_tls(servers: tuple[str, str, Path]) -> None:
    plain, _secure, _cert = servers
    assert _get(plain) == (200, False)


def test_https_verifies_the_certificate(servers: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _plain, secure, cert = servers
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(secure)  # a certificate nobody vouches for is refused
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert _get(secure) == (200, True)
