"""The build plan: one immutable value per image per build, made from one read of its sources.

    Image --plan--> BuildPlan --stage--> context folder --backend--> image --record--> records

`plan(image)` reads every file the image names once (through `Sources`: hashed with the stat
cache) and returns the identifier and uri, the Dockerfile text, the context manifest (every
staged path with its size, mode and digest), the labels, the secrets it needs, its platforms
and the per-part breakdown `explain` shows. `staged_plan(image)` does the same while copying
every file into the image's staging folder (`_stage`), so the digests, and the identifier, are
those of the bytes that are sent. Everything after it reads this value and nothing reads the
sources again: the skip decision, the backend call, the identity label, the push record, the
ImageCache entry, explain's record and what the CLI prints.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .._files.entries import FILE, Entry
from .._files.sources import Sources, Staged
from .._files.statcache import StatCache, shared_stat_cache
from .._files.uvbin import target_arch, uv_binary
from .._formats.dockerfile import Instructions, RenderOptions
from .._image.identity import TAG_HEX_DIGITS, Identified, Identity, digest_of
from .._image.image import Image
from .._image.layers import Files, Inputs
from .._image.secret import Secret, unusable_secrets

if TYPE_CHECKING:
    from .._files.staging import Snapshot

IDENTITY_LABEL = "dev.flyte-images.identifier"


@dataclass(frozen=True)
class Part:
    """One part of the identifier, as `explain` shows it."""

    name: str  # "base", "target", or "<n> <kind>"
    summary: str
    digest: str
    files: Files = field(default_factory=dict)


@dataclass(frozen=True)
class BuildPlan:
    image: Image
    identity: Identity
    digest: str  # SHA-256 hex of the identity's encoding
    repository: str  # registry/name, or name
    dockerfile: str
    secrets: tuple[Secret, ...]
    platforms: tuple[str, ...]
    inputs: tuple[Inputs, ...]  # what each layer read (a Dockerfile image: its context)
    has_uv: bool = False  # the build context holds uv for every platform (`_fi/uv/<arch>/uv`)
    base_part: Part | None = None  # a Dockerfile image's base part, with its files
    instructions: tuple[str, ...] = ()  # what was rendered, one item per Dockerfile instruction
    url_secrets: tuple[tuple[str, str], ...] = ()  # (build secret id, index URL with credentials)
    context: Path | None = None  # the staged context folder, while it is locked
    dockerfile_path: Path | None = None
    # The uri to tag and push as when a caller owns the tag (the flyte plugin: flyte computes its
    # own). The identity label and the records still carry our identifier.
    tag_uri: str | None = None
    options: RenderOptions = field(default_factory=RenderOptions)

    @property
    def identifier(self) -> str:
        return self.digest[:TAG_HEX_DIGITS]

    @property
    def uri(self) -> str:
        return self.tag_uri or f"{self.repository}:{self.identifier}"

    @property
    def labels(self) -> Mapping[str, str]:
        return {IDENTITY_LABEL: self.identifier}

    @cached_property
    def manifest(self) -> tuple[Staged, ...]:
        """Every staged path with its size, mode and digest (made when first asked for: a plan
        for `id` or a skipped build never needs it)."""
        return tuple(s for inputs in self.inputs for s in inputs.manifest()) + self.uv_binaries()

    def uv_binaries(self) -> tuple[Staged, ...]:
        """uv for every target platform, where the context holds it (its version is in the
        identifier, not its bytes)."""
        entry = Entry("uv", FILE, 0o755)
        return tuple(Staged(f"_fi/uv/{target_arch(p)}/uv", entry) for p in self.platforms) if self.has_uv else ()

    @cached_property
    def parts(self) -> tuple[Part, ...]:
        """The identifier's parts for `explain`."""
        if self.base_part is not None:
            return (self.base_part, _target(self.image, self.identity))
        base = Part("base", str(self.image.resolved_base_image()), digest_of(self.identity.base))
        parts = [base, _target(self.image, self.identity)]
        for index, (layer, inputs) in enumerate(zip(self.image._layers, self.inputs, strict=True)):
            summary, files = layer.describe(), inputs.explain_files()
            parts.append(Part(f"{index + 1} {layer.KIND}", summary, digest_of(self.identity.layers[index]), files))
        return tuple(parts)


def plan(
    image: Image,
    options: RenderOptions | None = None,
    *,
    use_stat_cache: bool | None = None,
    uri: str | None = None,
    check_locks: bool = False,
) -> BuildPlan:
    """The plan of `image` from one hashing read of its files (nothing is staged); `uri`
    replaces repository:identifier as the uri it is tagged as. `check_locks` runs the checks a
    build runs first (a uv.lock that no longer matches its pyproject.toml, secrets a build cannot
    mount, a platform uv has no build for), for a dry run."""
    if check_locks:
        preflight(image)
    made = _make(image, options or RenderOptions(), shared_stat_cache(use_stat_cache), None)
    if check_locks:
        unusable_secrets(made.secrets)
        made.uv_binaries()  # uv exists for every platform (else the build would stop when staging)
    return replace(made, tag_uri=uri) if uri else made


@contextlib.contextmanager
def staged_plan(image: Image, options: RenderOptions | None = None, *, uri: str | None = None) -> Iterator[BuildPlan]:
    """The plan of `image` made while staging its files; the staging folder stays locked (and
    unchanged) until the block ends, so the backend sends exactly what the plan describes.
    The layers' checks (`preflight`) run first, before anything is staged."""
    from .._files.staging import snapshot

    preflight(image)
    with snapshot(description_key(image)) as snap:
        made = _make(image, options or RenderOptions(), shared_stat_cache(), snap)
        if made.has_uv:  # fetched once per machine, hard-linked into each staging folder
            for staged, platform in zip(made.uv_binaries(), made.platforms, strict=True):
                snap.share_file(uv_binary(platform), staged.dest)
        dockerfile = made.dockerfile_path or snap.dockerfile
        if made.dockerfile_path is None:
            snap.write_dockerfile(made.dockerfile)
        snap.finish()
        cache = shared_stat_cache()
        if cache is not None:
            cache.save()
        yield replace(made, context=snap.context, dockerfile_path=dockerfile, tag_uri=uri)


def preflight(image: Image) -> None:
    """The checks a layer makes with tools on this machine before a build stages anything (a
    uv project: its uv.lock must match its pyproject.toml). They cost a process each, so the
    identifier and the Dockerfile (`id`, `dockerfile`) never run them."""
    for layer in image._layers:
        layer.preflight()


def _make(image: Image, options: RenderOptions, cache: StatCache | None, snap: Snapshot | None) -> BuildPlan:
    made = image._identified(Sources(cache=cache, snap=snap))
    repository = image._repository()
    if made.dockerfile is not None:
        return _from_dockerfile(image, repository, made, made.dockerfile)
    return _assembled(image, made.identity, repository, made.inputs, options)


def _assembled(
    image: Image, identity: Identity, repository: str, inputs: tuple[Inputs, ...], options: RenderOptions
) -> BuildPlan:
    """The plan of a layered image from what its layers read; its Dockerfile is a pure function
    of both."""
    out = Instructions(image.python_version, image.resolved_base_image() or "", options)
    layers = image._layers
    if not (layers and layers[0].KIND == "debian_base"):
        out.from_base()
    for index, layer in enumerate(layers):
        layer.render(out, inputs[index], index)
    return BuildPlan(
        image=image,
        identity=identity,
        digest=identity.digest,
        repository=repository,
        dockerfile=out.text(),
        instructions=tuple(out.instructions),
        secrets=tuple(out.secrets),
        url_secrets=tuple(out.url_secrets),
        platforms=image.platform,
        inputs=inputs,
        has_uv=out.has_uv,
        options=options,
    )


def subplan(planned: BuildPlan, kept: tuple[int, ...]) -> BuildPlan:
    """The plan of the same image with only the layers at positions `kept` (in order), made from
    what `planned` already read: no file is read again, so both describe the same bytes. Of a
    staged plan, the subplan uses the same staged context (its Dockerfile names only its own
    layers' files) with its own Dockerfile beside it.

    Layers render by their position (`_fi/<n>/`), so a kept layer must keep its position:
    `kept` may drop layers at the end, and layers that render nothing anywhere (ignore rules)."""
    image = planned.image._replace(_layers=tuple(planned.image._layers[i] for i in kept))
    inputs = tuple(planned.inputs[i] for i in kept)
    made = _assembled(image, planned.identity.with_layers(kept), planned.repository, inputs, planned.options)
    if planned.context is None:
        return made
    path = planned.context.parent / f"{made.identifier}.Dockerfile"
    tmp = path.with_name(".subplan.Dockerfile.tmp")
    tmp.write_text(made.dockerfile, encoding="utf-8")
    tmp.replace(path)
    return replace(made, context=planned.context, dockerfile_path=path)


def _from_dockerfile(
    image: Image, repository: str, made: Identified, dockerfile: tuple[Entry, str, Path | None]
) -> BuildPlan:
    """The user's own Dockerfile, used as written; its folder is the context."""
    entry, text, staged = dockerfile
    assert image.dockerfile is not None
    files = {image.dockerfile.name: (entry.mode, entry.digest), **made.inputs[0].explain_files()}
    return BuildPlan(
        image=image,
        identity=made.identity,
        digest=made.identity.digest,
        repository=repository,
        dockerfile=text,
        secrets=(),
        platforms=image.platform,
        inputs=made.inputs,
        base_part=Part("base", str(image.dockerfile), digest_of(made.identity.base), files),
        dockerfile_path=staged,
    )


def _target(image: Image, identity: Identity) -> Part:
    version = "from the base image" if image.python_version is None else "{}.{}".format(*image.python_version)
    return Part("target", f"python {version}, {', '.join(image.platform)}", digest_of(identity.target()))


def description_key(image: Image) -> str:
    """What stays the same while files are edited: the image as described (its layers, their
    arguments and absolute paths), not the files' contents. It names the image's staging folder
    and its history of builds for `explain`."""
    return hashlib.sha256(repr(image).encode()).hexdigest()[:24]


def image_digest(image: Image, *, use_stat_cache: bool | None = None) -> str:
    """Full SHA-256 hex of an image's identity."""
    return plan(image, use_stat_cache=use_stat_cache).digest
