"""Registries with authentication for the registry tests, all real docker-registry processes.

- a basic-auth registry (htpasswd, bcrypt) on plain HTTP on loopback;
- a token-auth registry (`auth: token`) with a token issuer written here: it checks basic
  credentials and signs RS256 JWTs with a test key whose certificate the registry trusts;
- FlakyProxy, a fake that stands in front of a real registry only to answer 429 once, since a
  registry cannot be made to rate-limit on demand.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
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


def _issuer_material() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fi-test-token-issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
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
