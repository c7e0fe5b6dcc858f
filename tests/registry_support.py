"""Registries with authentication for the registry tests, all real docker-registry processes.

- a basic-auth registry (htpasswd, bcrypt) on plain HTTP on loopback;
- a token-auth registry (`auth: token`) with a token issuer written here: it checks basic
  credentials and signs RS256 JWTs with a test key whose certificate the registry trusts;
- FlakyProxy, a fake that stands in front of a real registry only to answer 429 once, since a
  registry cannot be made to rate-limit on demand;
- FakeServer, the base of the hand-written hostile fakes of the tests (redirecting fronts,
  servers that drip bytes, answer garbage, serve malformed documents, stall uploads or close
  connections without answering): no real registry can be made to misbehave like that;
- seed_image, which puts a small image into a real registry over its HTTP API (no engine).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.server
import json
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from engine_support import BUSYBOX, Registry, docker, free_port, registry

USER, PASSWORD = "alice", "wonderland-pw"
SERVICE, ISSUER = "fi-test-registry", "fi-test-issuer"


@contextlib.contextmanager
def basic_registry() -> Iterator[Registry]:
    with tempfile.TemporaryDirectory(prefix="fi-htpasswd-") as tmp:
        htpasswd = Path(tmp) / "htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{USER}:{hashed}\n")
        with registry(f"auth:\n  htpasswd:\n    realm: fi-test\n    path: {htpasswd}\n") as running:
            yield running


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenIssuer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    requests: list[dict[str, str]] = field(default_factory=list)

    def token(self, scope: str) -> str:
        access = []
        if scope:
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        chain = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        header = {"alg": "RS256", "typ": "JWT", "x5c": chain}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": str(uuid.uuid4()), "access": access}  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def self_signed(key: Any, common_name: str, *extensions: tuple[x509.ExtensionType, bool]) -> x509.Certificate:
    """A certificate `key` signs for itself, valid from a day ago for a day, with `extensions`
    (each with whether it is critical)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def self_signed_files(
    folder: Path, stem: str, common_name: str, *extensions: tuple[x509.ExtensionType, bool]
) -> tuple[Path, Path]:
    """A new EC key and its self-signed certificate as PEM files in `folder`: (certificate, key)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, common_name, *extensions)
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _issuer_material() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, self_signed(key, "fi-test-token-issuer", (x509.BasicConstraints(ca=True, path_length=None), True))


def _serve(
    handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> tuple[http.server.ThreadingHTTPServer, int]:
    """`handler` served on 127.0.0.1 in a daemon thread (over TLS with `tls`); the server and port."""
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@contextlib.contextmanager
def token_registry() -> Iterator[tuple[Registry, TokenIssuer]]:
    key, cert = _issuer_material()
    issuer = TokenIssuer(key, cert)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            issuer.requests.append(query)
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": issuer.token(query.get("scope", "")), "expires_in": 600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server, port = _serve(Handler)
    with tempfile.TemporaryDirectory(prefix="fi-token-") as tmp:
        bundle = Path(tmp) / "issuer.pem"
        bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        config = (
            f"auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n"
        )
        try:
            with registry(config) as running:
                yield running, issuer
        finally:
            server.shutdown()


class FlakyProxy:
    """A fake in front of a real registry: the first manifest request gets 429 Retry-After: 1."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.answers: list[int] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def _forward(self) -> None:
                if "/manifests/" in self.path and 429 not in proxy.answers:
                    proxy.answers.append(429)
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
                response = httpx.request(self.command, f"http://{proxy.upstream}{self.path}", headers=headers)
                proxy.answers.append(response.status_code)
                self.send_response(response.status_code)
                for name in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate"):
                    if name in response.headers:
                        self.send_header(name, response.headers[name])
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.content)

            do_GET = do_HEAD = _forward

        self.server, self.port = _serve(Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


def docker_login(config_dir: Path, host: str) -> None:
    subprocess.run(
        ["docker", "--config", str(config_dir), "login", host, "-u", USER, "--password-stdin"],
        input=PASSWORD, text=True, capture_output=True, check=True,
    )  # fmt: skip


def push_busybox(host: str, repository: str, tag: str, config_dir: Path | None = None) -> str:
    """Push the local busybox image as host/repository:tag; return the manifest digest."""
    target = f"{host}/{repository}:{tag}"
    docker("tag", BUSYBOX, target)
    args = ["--config", str(config_dir)] if config_dir else []
    out = subprocess.run(["docker", *args, "push", target], capture_output=True, text=True, check=True).stdout
    docker("image", "rm", target, check=False)
    return out.rsplit("digest: ", 1)[1].split()[0]


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Seeded:
    reference: str
    digest: str  # of the manifest
    config: bytes
    config_digest: str


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def seed_image(
    host: str, repository: str, tag: str, *, architecture: str = "amd64", auth: tuple[str, str] | None = None
) -> Seeded:
    """Put a one-config, no-layer OCI image for linux/`architecture` into a real registry."""
    config = json.dumps({"architecture": architecture, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    blob = config.encode()
    base = f"http://{host}/v2/{repository}"
    with httpx.Client(auth=auth) as client:
        location = client.post(f"{base}/blobs/uploads/").headers["Location"]
        location = location if location.startswith("http") else f"http://{host}{location}"
        sep = "&" if "?" in location else "?"
        assert client.put(f"{location}{sep}digest={sha256(blob)}", content=blob).status_code == 201
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": [],
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(blob),
                       "size": len(blob)},
        }).encode()  # fmt: skip
        put = client.put(f"{base}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST_TYPE})
        assert put.status_code == 201, put.text
    return Seeded(f"{host}/{repository}:{tag}", sha256(manifest), blob, sha256(blob))


def reply(
    handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> None:
    """Send one whole answer (no body for HEAD, as HTTP wants)."""
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


class FakeServer:
    """A fake: a threaded HTTP server on a free loopback port that hands every request to
    `answer(handler)` and records what it was asked (`seen`). Only for behaviour no real
    registry can be made to show; the tests say which fake stands for what."""

    def __init__(self, answer: Answer, *, keep_alive: bool = False) -> None:
        self.seen: list[Seen] = []
        self.connections: set[int] = set()  # the client ports that were served
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            # HTTP/1.0 closes each connection after its answer; 1.1 keeps it for the next request.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def log_message(self, *_args: object) -> None:
                pass

            def _answer(self) -> None:
                fake.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                fake.connections.add(self.client_address[1])
                with contextlib.suppress(OSError):  # the client may hang up first (deadlines)
                    answer(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

        self.server, self.port = _serve(Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def forward(handler: http.server.BaseHTTPRequestHandler, upstream: str) -> None:
    """Pass a request on to a real registry with its Accept and Authorization headers, and its
    answer back (with the headers a registry client reads)."""
    headers = {k: v for k, v in handler.headers.items() if k.lower() in ("accept", "authorization")}
    response = httpx.request(handler.command, f"http://{upstream}{handler.path}", headers=headers)
    names = ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate")
    reply(
        handler,
        response.status_code,
        response.content,
        {n: response.headers[n] for n in names if n in response.headers},
    )


@contextlib.contextmanager
def seeded_registry(repository: str = "team/app", tag: str = "v1") -> Iterator[Seeded]:
    """A real registry on loopback holding one small linux/amd64 image."""
    with registry() as running:
        yield seed_image(running.host, repository, tag)
