"""The image identifier: what it covers, how it is encoded, and why its tag is long enough.

The identifier is SHA-256 over the canonical encoding (`_encoding`) of

    ("flyte-images/image", IDENTIFIER_FORMAT,
     (RENDERER_REVISION, SHA-256 of the base template, uv version, poetry version),
     base, python_version, platforms, (layer identity, ...))

- base: the base image reference as written (`from_base`, `from_debian_base`'s configured
  default, a resolved `from_ref_name`), or for `from_dockerfile` the Dockerfile's bytes and
  every file of its context folder that is sent (its .dockerignore applied; the ignore files
  themselves are not sent);
- python_version: `(3, 12)` where we choose the Python, None where the base image decides;
- platforms: the platform set, sorted (an amd64 image and an amd64+arm64 image differ);
- each layer in order, with its normalised arguments and the relative path, permission bits
  and SHA-256 of every file it copies or reads (see `_layers` and `_sources`).

Never covered: absolute paths, times, owners, the host name or user, environment variables the
image does not declare, secret values, and the registry or repository name (the same content
pushed to two repositories has the same tag).

IDENTIFIER_FORMAT changes when this encoding changes; RENDERER_REVISION when the Dockerfile
rendered for the same layers changes. Both enter every tag on purpose: a new rendering is a new
image, and an edit of the renderer must be a deliberate decision to rebuild users' images. The
tests pin a table of identifiers (tests/test_golden.py) and the rendered snapshots to the
revision, so an accidental change fails there. The digests come from the build plan's single
read of every file (see `_plan`); when building, from the staged copies that are sent.

The tag is the first 32 hex digits (128 bits) of the digest. Within one repository a chance
collision needs about 2**64 images; a deliberate one needs about 2**64 SHA-256 evaluations,
far beyond reach, while 80 bits would be within reach of a determined attacker (2**40). 32 hex
digits is also the length users know from the original tool's MD5 tags.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .._formats.encoding import Encodable, encode

IDENTIFIER_FORMAT = 2
RENDERER_REVISION = 3
TAG_HEX_DIGITS = 32


def renderer_identity() -> Encodable:
    """What the renderer adds besides the layers: its revision, the base template's bytes and
    the pinned tool versions it installs (uv, poetry). Changing any of them changes every tag."""
    from .._files.uvbin import UV_VERSION
    from .._formats.dockerfile import template_bytes
    from .._image.layers import POETRY_VERSION

    return (RENDERER_REVISION, hashlib.sha256(template_bytes()).hexdigest(), UV_VERSION, POETRY_VERSION)


@dataclass(frozen=True)
class Identity:
    """What an image's identifier covers, by name; `encodable()` is the value hashed (the same
    bytes as ever: every tag depends on them). `explain` compares these part by part."""

    base: Encodable
    python_version: tuple[int, int] | None
    platforms: tuple[str, ...]
    layers: tuple[Encodable, ...]
    renderer: Encodable = field(default_factory=renderer_identity)

    def encodable(self) -> Encodable:
        return (
            "flyte-images/image",
            IDENTIFIER_FORMAT,
            self.renderer,
            self.base,
            self.python_version,
            self.platforms,
            self.layers,
        )

    @property
    def digest(self) -> str:
        return digest_of(self.encodable())

    def target(self) -> Encodable:
        """The part that is neither the base nor a layer: format, renderer, Python, platforms."""
        return (IDENTIFIER_FORMAT, self.renderer, self.python_version, self.platforms)

    def with_layers(self, kept: tuple[int, ...]) -> Identity:
        """The identity of the same image with only the layers at positions `kept`, in that order."""
        return Identity(
            self.base, self.python_version, self.platforms, tuple(self.layers[i] for i in kept), self.renderer
        )


def digest_of(identity: Encodable) -> str:
    return hashlib.sha256(encode(identity)).hexdigest()
