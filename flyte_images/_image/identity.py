"""The image identifier: what it covers, how it is encoded, and why its tag is long enough.

SHA-256 over the canonical encoding (`_formats.encoding`) of `Identity.encodable()`: the format
and the renderer (RENDERER_REVISION, the base template's SHA-256, the uv and poetry versions),
the base (the image reference as written, or for `from_dockerfile` the Dockerfile and every file
of its context that is sent), the Python version (None where the base image decides), the sorted
platform set, and each layer in order: its normalised arguments and the relative path,
permission bits and SHA-256 of every file it reads (one read, `identify`; when building, of the
staged copies that are sent). Never covered: absolute paths, times, owners, the host name or
user, undeclared environment variables, secret values, and the registry or repository name (the
same content pushed to two repositories has the same tag).

IDENTIFIER_FORMAT changes with this encoding, RENDERER_REVISION with the Dockerfile rendered for
the same layers. Both enter every tag on purpose: a new rendering is a deliberate decision to
rebuild users' images (tests/test_golden.py pins a table of identifiers, the snapshots pin the
revision).

The tag is the first 32 hex digits (128 bits): a chance collision within one repository needs
about 2**64 images, a deliberate one about 2**64 SHA-256 evaluations (80 bits would be within a
determined attacker's reach, 2**40); it is also the length users know from the MD5 tags.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _config
from .._errors import MissingNameError
from .._files.entries import FILE, Entry, Tree
from .._files.sources import Sources
from .._files.uvbin import UV_VERSION
from .._formats.dockerfile import template_bytes
from .._formats.encoding import Encodable, encode
from .layers import POETRY_VERSION, DockerIgnore, Inputs

if TYPE_CHECKING:
    from .layers.base import Layer

IDENTIFIER_FORMAT = 2
RENDERER_REVISION = 4
TAG_HEX_DIGITS = 32


def renderer_identity() -> Encodable:
    """What the renderer adds besides the layers: its revision, the base template's bytes and
    the pinned tool versions it installs (uv, poetry). Changing any of them changes every tag."""
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


@dataclass(frozen=True)
class Identified:
    """An image's identity and what it was computed from: what each layer read, or for a
    `from_dockerfile` image its context and the Dockerfile's entry, text and staged copy."""

    identity: Identity
    inputs: tuple[Inputs, ...]
    dockerfile: tuple[Entry, str, Path | None] | None = None  # (entry, text, staged copy)

    @property
    def identifier(self) -> str:
        return self.identity.digest[:TAG_HEX_DIGITS]


def repository_of(name: str | None, registry: str | None, base: str | None) -> str:
    """`registry/name` of a built image (the configured registry when it names none)."""
    if not name:
        raise MissingNameError(
            f"this image (based on {base!r}) is built, so it needs a repository "
            "name for its uri; add one with .clone(name='my-image')"
        )
    registry = registry or _config.configured_registry()
    return f"{registry.rstrip('/')}/{name}" if registry else name


def identify(
    base: str | None,
    python_version: tuple[int, int] | None,
    platforms: tuple[str, ...],
    layers: tuple[Layer, ...],
    sources: Sources,
) -> Identified:
    """The identity of an image of `layers` on `base` from one read of their files through
    `sources` (which stages them when it has a snapshot)."""
    # Ignore rules first: they shape every copy.
    order = sorted(range(len(layers)), key=lambda i: not isinstance(layers[i], DockerIgnore))
    read = {i: layers[i].inputs(sources, i) for i in order}
    inputs = tuple(read[i] for i in range(len(layers)))
    layer_identities = tuple(layer.identity(inputs[i]) for i, layer in enumerate(layers))
    return Identified(Identity(("image", base), python_version, platforms, layer_identities), inputs)


def identify_dockerfile(
    dockerfile: Path, python_version: tuple[int, int] | None, platforms: tuple[str, ...], sources: Sources
) -> Identified:
    """The identity of an image built from the user's own Dockerfile: its folder is the context,
    read like any copied folder (its .dockerignore applied, the ignore files themselves not sent)."""
    folder = dockerfile.parent
    own = folder / f"{dockerfile.name}.dockerignore"
    ignore = own if own.is_file() else folder / ".dockerignore"
    ctx = Sources(cache=sources.cache, snap=sources.snap, dockerignore=ignore if ignore.is_file() else None)
    if not dockerfile.is_file():
        ctx.small_file(dockerfile, "", "Dockerfile")  # raises the right error
    tree: Tree = ctx.tree(folder, "", defaults=False, extra=(".dockerignore", f"{dockerfile.name}.dockerignore"))
    in_context = {e.path: e for e in tree.entries}.get(dockerfile.name)
    staged = None
    if in_context is not None and in_context.kind == FILE:
        entry = in_context
        source = sources.snap.context / dockerfile.name if sources.snap is not None else dockerfile
        text = source.read_text(encoding="utf-8")
        staged = source if sources.snap is not None else None
    else:
        entry, data = Sources(cache=sources.cache).small_file(dockerfile, "", "Dockerfile")
        text = data.decode("utf-8")
    base: Encodable = ("dockerfile", entry.identity()[1:], tree.identity())
    identity = Identity(base, python_version, platforms, ())
    return Identified(identity, (Inputs(trees=(("", "", tree),)),), (entry, text, staged))
