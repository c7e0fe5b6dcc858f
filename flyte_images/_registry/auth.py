"""Registry credentials from where users keep them, in this order: Docker's config.json
(`$DOCKER_CONFIG` or `~/.docker`) `credHelpers[host]`, `credsStore`, `auths[host]`; then for
Amazon ECR hosts a token from `ecr:GetAuthorizationToken` (boto3, the `ecr` extra). Held in
memory only, never in logs or errors.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import RegistryError
from . import wire

ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\Z")
_HELPER_TIMEOUT = 30.0
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def secrets(self) -> tuple[str, ...]:
        """Every form of the password that could show up in text, for the redactor."""
        pair = f"{self.username}:{self.password}"
        return self.password, pair, base64.b64encode(pair.encode()).decode()


def _keys_for(host: str) -> tuple[str, ...]:
    if host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        return _HUB_KEYS
    return (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/")


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise RegistryError(
            f"Docker's config names the credential helper {helper!r} for {host}, but docker-credential-"
            f"{helper} is not on PATH; install it or remove it from {_config_path()}"
        )
    try:
        result = subprocess.run(
            [program, "get"], input=host, capture_output=True, text=True, check=False, timeout=_HELPER_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(
            f"docker-credential-{helper} did not answer for {host} within {_HELPER_TIMEOUT:g} s; "
            "check that it can reach its keychain"
        ) from None
    except OSError as exc:
        raise RegistryError(f"docker-credential-{helper} could not be run: {exc.strerror}; reinstall it") from None
    if result.returncode != 0:
        return None  # "credentials not found in native keychain": no login for this host
    answer = wire.parse(
        wire.HelperAnswer,
        result.stdout.encode(),
        f"the answer of docker-credential-{helper} for {host}",
        'it should print {"Username": ..., "Secret": ...}; update or reinstall the helper',
    )
    return Credentials(answer.username, answer.secret)


def _config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _read_config(path: Path) -> wire.DockerConfig | None:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(
            f"cannot read Docker's config {path}: {exc.strerror}; fix its permissions or set DOCKER_CONFIG "
            "to another folder"
        ) from None
    fix = "fix the file (`docker login` rewrites it) or set DOCKER_CONFIG to another folder"
    return wire.parse(wire.DockerConfig, text, f"Docker's config {path}", fix)


def _from_auths(path: Path, key: str, entry: wire.AuthEntry) -> Credentials | None:
    if entry.auth:
        try:
            user, colon, password = base64.b64decode(entry.auth, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            colon = ""
        if not colon:
            raise RegistryError(
                f"Docker's config {path} has an auth value for {key} that is not base64 of user:password; "
                f"log in again with `docker login {key}`"
            )
        return Credentials(user, password)
    if entry.username and entry.password:
        return Credentials(entry.username, entry.password)
    return None


def _docker_credentials(host: str) -> Credentials | None:
    path = _config_path()
    config = _read_config(path)
    if config is None:
        return None
    keys = _keys_for(host)
    helpers = config.cred_helpers or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], host)
    found = _from_helper(config.creds_store, host) if config.creds_store else None
    for key in keys:
        entry = (config.auths or {}).get(key)
        if found is None and entry is not None:
            found = _from_auths(path, key, entry)
    return found


def ecr_credentials(host: str) -> Credentials:
    """A short-lived password from ECR's GetAuthorizationToken for `host`'s account and region."""
    match = ECR_HOST.match(host)
    assert match is not None
    account, region = match.groups()
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise RegistryError(
            f"{host} is an Amazon ECR registry; install boto3 (pip install 'flyte-images[ecr]') or "
            f"log in with `aws ecr get-login-password | docker login --username AWS --password-stdin {host}`"
        ) from None
    try:
        client = boto3.client("ecr", region_name=region)
        data = client.get_authorization_token(registryIds=[account])["authorizationData"][0]
    except Exception as exc:  # botocore raises many types; the message is what helps
        raise RegistryError(f"could not get an ECR token for {host}: {type(exc).__name__}: {exc}") from None
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return Credentials(user, password)


def credentials_for(host: str) -> Credentials | None:
    found = _docker_credentials(host)
    if found is None and ECR_HOST.match(host):
        found = ecr_credentials(host)
    return found


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE.findall(rest))
