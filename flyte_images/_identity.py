"""The image identifier: what it covers, how it is encoded, and why its tag is long enough.

The identifier is SHA-256 over the canonical encoding (`_encoding`) of

    ("flyte-images/image", IDENTIFIER_FORMAT, RENDERER_REVISION,
     base, python_version, platforms, (layer identity, ...))

- base: the base image reference as written (`from_base`, `from_debian_base`'s configured
  default, a resolved `from_ref_name`), or for `from_dockerfile` the Dockerfile's bytes and
  every file of its context folder that Docker would send (its .dockerignore applied);
- python_version: `(3, 12)` where we choose the Python, None where the base image decides;
- platforms: the platform set, sorted (an amd64 image and an amd64+arm64 image differ);
- each layer in order, with its normalised arguments and the relative path, permission bits
  and SHA-256 of every file it copies or reads (see `_layers` and `_sources`).

Never covered: absolute paths, times, owners, the host name or user, environment variables the
image does not declare, secret values, and the registry or repository name (the same content
pushed to two repositories has the same tag).

IDENTIFIER_FORMAT changes when this encoding changes; RENDERER_REVISION when the Dockerfile
rendered for the same layers changes. Both enter every tag on purpose: a new rendering is a new
image, and an edit of the renderer must be a deliberate decision to rebuild users' images.

The tag is the first 32 hex digits (128 bits) of the digest. Within one repository a chance
collision needs about 2**64 images; a deliberate one needs about 2**64 SHA-256 evaluations,
far beyond reach, while 80 bits would be within reach of a determined attacker (2**40). 32 hex
digits is also the length users know from the original tool's MD5 tags.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ._encoding import Encodable, encode
from ._sources import SourceContext, folder_entries, single_file
from ._statcache import StatCache, shared_stat_cache

if TYPE_CHECKING:
    from ._image import Image

IDENTIFIER_FORMAT = 1
RENDERER_REVISION = 1
TAG_HEX_DIGITS = 32


def source_context(image: Image, cache: StatCache | None) -> SourceContext:
    from ._layers import DockerIgnore

    dockerignore = None
    for layer in image._layers:
        if isinstance(layer, DockerIgnore):
            dockerignore = layer.path
    return SourceContext(dockerignore=dockerignore, cache=cache)


def _base(image: Image, ctx: SourceContext) -> Encodable:
    if image.dockerfile is not None:
        dockerfile = single_file(image.dockerfile, ctx, "Dockerfile")
        context = image.dockerfile.parent
        own = context / f"{image.dockerfile.name}.dockerignore"
        ignore = own if own.is_file() else context / ".dockerignore"
        tree_ctx = SourceContext(dockerignore=ignore if ignore.is_file() else None, cache=ctx.cache)
        entries = folder_entries(context, tree_ctx, defaults=False)
        return ("dockerfile", dockerfile.identity()[1:], entries.identity())
    return ("image", image.resolved_base_image())


def image_identity(image: Image, cache: StatCache | None) -> Encodable:
    """The value whose encoding is hashed; `explain` compares these part by part."""
    ctx = source_context(image, cache)
    return (
        "flyte-images/image",
        IDENTIFIER_FORMAT,
        RENDERER_REVISION,
        _base(image, ctx),
        image.python_version,
        image.platform,
        tuple(layer.identity(ctx) for layer in image._layers),
    )


def image_digest(image: Image, *, use_stat_cache: bool | None = None) -> str:
    """Full SHA-256 hex of the image's identity. Reads the files the image names."""
    cache = shared_stat_cache(use_stat_cache)
    return hashlib.sha256(encode(image_identity(image, cache))).hexdigest()


def image_tag(image: Image, *, use_stat_cache: bool | None = None) -> str:
    return image_digest(image, use_stat_cache=use_stat_cache)[:TAG_HEX_DIGITS]
