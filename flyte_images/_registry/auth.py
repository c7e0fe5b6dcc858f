"""Registry credentials from where users already keep them, and the challenge flows.

Lookup order for a registry host: Docker's config.json (`$DOCKER_CONFIG/config.json` or
`~/.docker/config.json`): `credHelpers[host]`, then `credsStore`, then `auths[host]`; for Amazon
ECR hosts with no stored credentials, a token from `ecr:GetAuthorizationToken` (boto3, the
`ecr` extra). Credentials are held in memory only and never appear in logs or errors.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import RegistryError

ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _keys_for(host: str) -> tuple[str, ...]:
    if host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        return _HUB_KEYS
    return (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/")


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise RegistryError(
            f"Docker's config names the credential helper {helper!r} for {host}, but docker-credential-"
            f"{helper} is not on PATH; install it or remove it from {docker_config_path()}"
        )
    result = subprocess.run([program, "get"], input=host, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        return None  # "credentials not found in native keychain": no login for this host
    try:
        data = json.loads(result.stdout)
        return Credentials(data["Username"], data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"docker-credential-{helper} returned something that is not credentials") from None


def docker_credentials(host: str) -> Credentials | None:
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read Docker's config {path}: {exc}") from exc
    keys = _keys_for(host)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], host)
    if config.get("credsStore"):
        found = _from_helper(config["credsStore"], host)
        if found is not None:
            return found
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    return None


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
    found = docker_credentials(host)
    if found is None and ECR_HOST.match(host):
        found = ecr_credentials(host)
    return found


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE.findall(rest))
