"""Image references as registries take them: `host[:port]/repository:tag` or `...@digest`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._errors import RegistryError
from . import redact

_DIGEST_REF = re.compile(r"[a-z0-9]+:[0-9a-f]{32,}")


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str  # a tag, or the digest the reference names

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}{'@' if self.by_digest else ':'}{self.tag}"

    @property
    def by_digest(self) -> bool:
        return _DIGEST_REF.fullmatch(self.tag) is not None


def parse_reference(ref: str) -> Reference:
    """`host[:port]/repo[/...]:tag` (or `@sha256:...`); Docker Hub names are expanded."""
    name, at, digest = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if "://" in ref or (at and (not _DIGEST_REF.fullmatch(digest) or "@" in name)):
        raise RegistryError(
            f"{redact.reference(ref)!r} is not an image reference: write registry.example/team/app:tag, with no "
            "scheme and no credentials (log in with `docker login HOST` instead)"
        )
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:  # with a digest too (`app:1@sha256:...`), the digest names the manifest
        name, tag = name[:colon], digest or name[colon + 1 :]
    else:
        tag = digest or "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "registry-1.docker.io", name if rest else f"library/{name}"
    valid_tag = _DIGEST_REF.fullmatch(tag) or re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag)
    if not valid_tag or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:__[a-z0-9]+)*", repository):
        raise RegistryError(f"{redact.reference(ref)!r} is not an image reference like registry.example/team/app:tag")
    return Reference(host, repository, tag)
