"""`build(image)`: from an Image to an image in the local engine or a registry, by one route.

    route (engine, or append when the image is pushed and ends in file layers)
    -> plan (one hashing read of every file; nothing copied, nothing fetched)
    -> decide (the skip rule, for the image and, on the append route, its engine part, asked
       at once): an image that exists ends here
    -> stage (the files copied while hashed again: the staged bytes are what is built; if a
       file changed in between, the skip rule is asked about the staged plan)
    -> execute (the backend builds exactly the staged bytes; the append route builds the engine
       part, a subplan of the same staged plan, only when it is missing, then appends the file
       part in the registry) -> record (push record, explain)

An image with a registry (argument, `init`, or FLYTE_IMAGES_REGISTRY) is pushed; one without is
loaded into the local engine. The uri reported, the tag the engine gets, the identity label and
the records all come from the one plan, so they always agree with the bytes inside the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _config
from .._errors import ConfigError
from .._formats.dockerfile import RenderOptions
from .._formats.validation import image_reference
from .._image.image import Image
from .._interrupt import run_coroutine
from .._plan.plan import BuildPlan, plan
from .._syncaio import syncaio
from .append import APPEND, AppendRoute, Choice, choose
from .backends import WholeImageBuilder
from .decide import Decision
from .engine_route import EngineRoute, ObjectRoute
from .job import Backend, Job, Route
from .options import BuildOptions
from .result import ImageBuild

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder, Progress


@syncaio
def build(
    image: Image,
    dry_run: bool = False,
    force: bool = False,
    wait: bool = True,
    *,
    platform: str | tuple[str, ...] | None = None,
    builder: str | Builder | None = None,
    push: bool | None = None,
    cache_from: tuple[str, ...] = (),
    cache_to: tuple[str, ...] = (),
    ca_bundle: Path | str | None = None,
    quiet: bool = False,
    require_check: bool | None = None,
    cache: str | None = None,
    no_cache: bool = False,
    tags: tuple[str, ...] | list[str] | str = (),
    compression: str | None = None,
) -> ImageBuild:
    """Build `image` unless it already exists; return its uri (an `ImageBuild`, a str).

    Pushes when the image has a registry, loads into the local engine otherwise (`push`
    overrides). `force` builds even if the image exists; `dry_run` plans and reports only.
    `platform` overrides the image's platforms; `builder` names a backend (default: docker) or
    is one; `cache_from`/`cache_to` are passed to BuildKit; `ca_bundle` (or
    FLYTE_IMAGES_CA_BUNDLE) is a CA file mounted as a secret into every downloading step, never
    into the image. When the registry cannot be asked, a RegistryError says why before
    anything is built (`require_check=False`: the image is built anyway, with a warning).
    `cache="registry"` (or FLYTE_IMAGES_CACHE / the config key `cache`) keeps BuildKit's layer
    cache in the image's repository, one tag per platform (`buildcache-linux-amd64`, ...), each
    imported and exported by that platform's build only, and imports it on the next build:
    an ephemeral CI runner then re-runs only the steps whose inputs changed (exported by backends
    that can, such as `buildkit`; the others only import it); `cache="none"` turns it off.
    `no_cache=True` makes BuildKit re-run every step instead of reusing its layer cache; it
    changes neither the identifier nor the skip rule (with `force`, an existing image is rebuilt
    from scratch).
    `wait` is accepted for compatibility: builds always complete before this returns.
    `tags` (e.g. `("latest", "ghcr.io/acme/app:stable")`) are more tags pushed beside the
    content tag: names in the image's repository, full references elsewhere (never instead of
    the content tag, never part of the identifier); when the image already exists they are
    pointed at it in the registry, without a build.
    `compression` ("gzip", the default, or "zstd"; else FLYTE_IMAGES_COMPRESSION or the config
    key `compression`) is how pushed layers are compressed: zstd layers are smaller and
    decompress faster, for pullers with containerd 1.5+ / Docker 23+; a backend that cannot
    write them refuses (docker: use buildkit). It is not part of the identifier.

    A pushed image that ends in file layers (source files and folders, env vars, workdir) is
    made in two parts: its engine part (everything before those layers) is built by the engine
    under its own tag only when the registry lacks it, and the file layers are appended to it
    in the registry, with no engine: an edit to source files then costs a few requests.
    `builder="append"` insists on that path; naming an engine backend (`"docker"`,
    `"buildkit"`, an instance) builds the whole image with it.

    Example:
        uri = flyte_images.build(Image.from_debian_base().with_pip_packages("numpy"))
        uri = await flyte_images.build.aio(image)
    """
    del wait
    options = BuildOptions.of(
        dry_run=dry_run,
        force=force,
        platform=platform,
        builder=builder,
        push=push,
        cache_from=cache_from,
        cache_to=cache_to,
        ca_bundle=ca_bundle,
        quiet=quiet,
        require_check=require_check,
        cache=cache,
        no_cache=no_cache,
        tags=tags,
        compression=compression,
    )
    return build_image(image, options)


def build_image(
    image: Image,
    options: BuildOptions | None = None,
    *,
    announce: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    uri: str | None = None,
    known: Mapping[str, Decision] | None = None,
) -> ImageBuild:
    """`build` with its options packed, `announce(uri)` called when a build really starts (after
    the skip rule) and its progress sent to `progress` (instead of this process's own progress
    view). `uri`, when given, is the reference the image is checked, tagged and pushed as
    instead of repository:identifier (for callers that own the tag, such as the flyte plugin);
    the identity label still carries our identifier. `known`: decisions already taken, by uri
    (a deploy asks about every image at once), not asked again."""
    options = options or BuildOptions()
    if image.is_reference:
        return ImageBuild(image.uri, built=False, reason="an existing image, used as is")
    route = route_of(image, options, uri)
    # Nothing is staged (copied, or uv fetched) before the skip rule has answered: an image that
    # exists costs one hashing read of its files (none with the stat cache) and one round of checks.
    planned = plan(route.image, route.render, uri=route.uri, check_locks=options.dry_run and route.stages)
    return build_planned(route, planned, options, announce=announce, progress=progress, known=known)


def build_planned(
    route: Route,
    planned: BuildPlan,
    options: BuildOptions,
    *,
    announce: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    known: Mapping[str, Decision] | None = None,
) -> ImageBuild:
    """Decide, stage, build and record `planned` (a plan of `route.image`, nothing staged) on
    its route: `build_image` after planning, and a deploy's build of each image it planned."""
    result = route.run(Job(planned, options, announce, progress, known or {}))
    if options.tags and route.pushing and result.uri and not options.dry_run:
        tag_as(result, options.tags)
    return result


def tag_as(result: ImageBuild, tags: tuple[str, ...]) -> None:
    """Push `tags` beside the content tag of a pushed image (built or found): a tag name in its
    repository, or a full reference elsewhere; each names the same manifest (by the digest the
    build or the check answered, when there is one)."""
    from .._registry import Registry, parse_reference  # here: it loads httpx

    assert result.uri is not None
    ref = parse_reference(result.uri)
    if result.digest:
        ref = parse_reference(f"{ref.host}/{ref.repository}@{result.digest}")
    targets = [parse_reference(t) if "/" in t else parse_reference(f"{ref.host}/{ref.repository}:{t}") for t in tags]

    async def put() -> None:
        async with Registry(insecure=_config.insecure_registries()) as registry:
            await registry.copy(ref, targets)

    run_coroutine(put())


def route_of(image: Image, options: BuildOptions, uri: str | None = None) -> Route:
    """The route of a build of `image` (not a reference): append when the image is pushed and
    ends in file layers (unless an engine backend is named), the builder object's when one is
    given, else the engine's."""
    uri = None if uri is None else image_reference("uri", uri)
    pushing = options.pushing(image.registry)
    if options.tags and not pushing:
        raise ConfigError(
            f"tags {', '.join(options.tags)} are pushed to the image's registry, but {image.name or 'this image'} is "
            "loaded into the local engine: give it a registry (or push=True / --push)"
        )
    chosen = _chosen_builder(options.builder)
    choice = choose(image, chosen, pushing)
    if choice.append and uri is not None and uri.rpartition(":")[0] != image._repository():
        choice = Choice(False, f"the tag {uri} is outside the image's repository {image._repository()}")
    if options.platform is not None:
        image = image.clone(platform=options.platform)  # type: ignore[arg-type]
    backend = Backend(None if chosen == APPEND else chosen)
    render = RenderOptions(ca_bundle=options.ca_bundle_path() is not None)
    if choice.append:
        return AppendRoute(image, pushing, backend, render, uri, choice.why)
    if chosen is not None and isinstance(backend.get(), WholeImageBuilder):
        return ObjectRoute(image, pushing, backend, render, uri, "a Flyte SDK image builder object was given")
    return EngineRoute(image, pushing, backend, render, uri, choice.why)


def _chosen_builder(builder: object) -> object:
    """The builder asked for: the one given, else an object given to `init(image_builder=...)`
    (used as if given here), else "append" when that is the configured name
    (FLYTE_IMAGES_BUILDER=append or image_builder = "append"), else None (the configured backend)."""
    chosen = _config.configured_builder_object() if builder is None else builder
    if chosen is None and _config.configured_builder() == APPEND:
        chosen = APPEND
    return chosen
