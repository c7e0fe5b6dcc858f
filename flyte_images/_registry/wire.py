"""What crosses the boundary, as frozen dataclasses read strictly (`_shapes`): manifests,
indexes, image configs, token answers, Docker's config.json and credential-helper output. A wrong
shape is a RegistryError naming the field's path (`parse`), never a KeyError half way through a
check, and never carrying the value (it may be a credential).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from .._errors import RegistryError
from .._formats import shapes as _shapes
from .._formats.shapes import Alias, AtLeast

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPTED_TYPES = frozenset(INDEX_TYPES + MANIFEST_TYPES)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)

# Registries may refuse manifests over 4 MiB (distribution spec); image configs carry the
# history of every layer (and BuildKit's inline cache), so they get more room.
MAX_MANIFEST = 4 * 1024 * 1024
MAX_BLOB = 16 * 1024 * 1024
MAX_TOKEN = 1024 * 1024

_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_VERIFIABLE = ("sha256", "sha512")

_HELPER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _digest(value: str) -> str:
    if not _DIGEST.fullmatch(value):
        raise ValueError("should be a digest like sha256:<64 hex digits>")
    return value


def _helper(value: str) -> str:
    # A helper name becomes part of a program name (docker-credential-NAME): no paths.
    if not _HELPER.fullmatch(value):
        raise ValueError("should be a credential helper name like 'desktop' (for docker-credential-desktop)")
    return value


Digest = Annotated[str, _digest]
HelperName = Annotated[str, _helper]


@dataclass(frozen=True, kw_only=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    media_type: Annotated[str | None, Alias("mediaType")] = None
    digest: Digest
    size: Annotated[int, AtLeast(0)]
    platform: Platform | None = None


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """Just enough of a manifest or index to tell which of the two it says it is."""

    media_type: Annotated[str | None, Alias("mediaType")] = None


@dataclass(frozen=True, kw_only=True)
class Index:
    schema_version: Annotated[Literal[2], Alias("schemaVersion")]
    manifests: list[Descriptor]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    schema_version: Annotated[Literal[2], Alias("schemaVersion")]
    config: Descriptor


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    os: str
    architecture: str
    variant: str | None = None

    @property
    def platform(self) -> str:
        return str(Platform(os=self.os, architecture=self.architecture, variant=self.variant))


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    labels: Annotated[dict[str, str] | None, Alias("Labels")] = None


@dataclass(frozen=True, kw_only=True)
class LabelledConfig(ImageConfig):
    """An image config with its labels: a per-platform image is only reused when its identity
    label is the one asked for. A separate model, so the existence check stays as lenient
    about labels as it always was."""

    config: RunConfig | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.labels or {}) if self.config else {}


def normalize_platform(text: str) -> str:
    """`os/arch[/variant]` as containerd compares them: arm64's only variant v8 and amd64's v1
    are the same platform as none, and 32-bit arm without a variant means v7."""
    os_name, arch, variant = ([*text.strip().lower().split("/"), "", ""])[:3]
    arch = "arm64" if arch == "aarch64" else arch
    if (arch, variant) in (("arm64", "v8"), ("amd64", "v1")):
        variant = ""
    elif arch == "arm" and not variant:
        variant = "v7"
    return "/".join(part for part in (os_name, arch, variant) if part)


@dataclass(frozen=True, kw_only=True)
class TokenAnswer:
    token: str | None = None
    access_token: str | None = None


@dataclass(frozen=True, kw_only=True)
class AuthEntry:
    auth: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, kw_only=True)
class DockerConfig:
    auths: dict[str, AuthEntry] | None = None
    cred_helpers: Annotated[dict[str, HelperName] | None, Alias("credHelpers")] = None
    creds_store: Annotated[HelperName | None, Alias("credsStore")] = None


@dataclass(frozen=True, kw_only=True)
class HelperAnswer:
    username: Annotated[str, Alias("Username")]
    secret: Annotated[str, Alias("Secret")]


M = TypeVar("M")


def parse(model: type[M], content: bytes, what: str, fix: str = "") -> M:
    """`content` as a `model`; else a RegistryError `<what> is not JSON` or `<what> has the wrong
    shape at a.0.b: <what was expected>[; <fix>]`, without the value."""
    try:
        return _shapes.load(model, content)
    except _shapes.Invalid as exc:
        problems = exc.problems
    # Raised here, not in the except block: nothing of the input may ride along as __context__
    # into a traceback or a log (it may be a password).
    problem = "is not JSON"
    if problems:
        where = ".".join(str(part) for part in problems[0].path) or "the top level"
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        problem = f"has the wrong shape at {where}: {problems[0].message}{more}"
    raise RegistryError(f"{what} {problem}" + (f"; {fix}" if fix else ""))


def is_digest(value: str) -> bool:
    return _DIGEST.fullmatch(value) is not None


def matches(digest: str, content: bytes) -> bool:
    """Whether `content` hashes to `digest`; an algorithm that cannot be checked never matches."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in _VERIFIABLE:
        return False
    return hashlib.new(algorithm, content).hexdigest() == expected


def dumps(document: Mapping[str, Any]) -> bytes:
    """A JSON document as written to a registry: compact and key-ordered, so the same document
    always gives the same digest."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()
