"""One multi-platform image from per-platform pushes (`Registry.push_index`). Engines that build
one platform at a time push each under a tag of its own (`platform_tag`), then the index listing
them under the tag itself: until it is there the tag is "missing", so a build cut short is
completed by the next. Every entry is read back first (digest, size and media type as the
registry holds them, and a config that says the entry's platform).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .reference import parse_reference
from .wire import normalize_platform

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_TAG = 128  # the distribution spec's limit on a tag's length


def platform_tag(tag: str, platform: str) -> str:
    """The tag one platform of a multi-platform image is pushed under (`linux/arm/v7`: the tag
    then `-linux-arm-v7`). A tag too long for that keeps its start and a hash of the whole, so
    two long tags never share per-platform tags."""
    suffix = "-" + normalize_platform(platform).replace("/", "-")
    if len(tag) + len(suffix) > MAX_TAG:
        tag = f"{tag[:96]}-{hashlib.sha256(tag.encode()).hexdigest()[:16]}"
    return tag + suffix


def platform_reference(reference: str, platform: str) -> str:
    """`host/repo:tag` -> `host/repo:<platform_tag(tag, platform)>` (the same repository, since an
    index can only list manifests of its own repository)."""
    ref = parse_reference(reference)
    if ref.by_digest:
        raise ValueError(f"{reference} names a digest; a multi-platform image needs a tag to push its index under")
    return f"{ref.host}/{ref.repository}:{platform_tag(ref.tag, platform)}"


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image manifest as the registry holds it, for an index entry."""

    reference: str
    platform: str  # as asked for (and checked against the config), e.g. "linux/arm64"
    media_type: str
    digest: str
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)

    def descriptor(self) -> dict[str, Any]:
        os_name, arch, *variant = self.platform.split("/")
        platform: dict[str, str] = {"architecture": arch, "os": os_name}
        if variant:
            platform["variant"] = variant[0]
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, "platform": platform}


def index_document(images: Iterable[PlatformImage]) -> bytes:
    """The OCI image index listing `images`, in platform order (the same platforms and
    manifests always give the same bytes, so the same digest)."""
    ordered = sorted(images, key=lambda image: image.platform)
    document = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [image.descriptor() for image in ordered],
    }
    return json.dumps(document, indent=2).encode()
