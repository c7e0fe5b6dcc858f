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

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .. import _config
from .._append.part import file_part_start
from .._errors import BuildError, ConfigError, FlyteImagesError, RegistryError
from .._formats.dockerfile import RenderOptions
from .._image.image import Image
from .._image.validation import image_reference
from .._interrupt import run_coroutine
from .._plan.plan import BuildPlan, plan, staged_plan
from .._syncaio import syncaio
from . import progress as progress_view
from .append import APPEND, Choice, append_to, choose, engine_subplan
from .backends import WholeImageBuilder, get_builder
from .decide import Decision, Question, ask_registry, decide_all, decide_from, said
from .engine import build_by_engine
from .options import BuildOptions
from .records import record
from .result import ImageBuild

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder, Progress

    from .._registry import Registry

T = TypeVar("T")


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
    cache in the image's repository under the tag `buildcache` and imports it on the next build:
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
    whole = route.backend.whole()
    # Nothing is staged (copied, or uv fetched) before the skip rule has answered: an image that
    # exists costs one hashing read of its files (none with the stat cache) and one round of checks.
    planned = plan(
        route.image,
        route.render,
        uri=route.uri,
        check_locks=options.dry_run and not isinstance(whole, WholeImageBuilder),
    )
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
    result = _built(route, planned, options, announce, progress, known)
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


def _built(
    route: Route,
    planned: BuildPlan,
    options: BuildOptions,
    announce: Callable[[str], None] | None,
    progress: Progress | None,
    known: Mapping[str, Decision] | None,
) -> ImageBuild:
    whole = route.backend.whole()
    if isinstance(whole, WholeImageBuilder):
        return _by_object(whole, route.image, planned, options, route.pushing)
    if options.dry_run:
        return _dry_run(route, planned, options, known)
    if route.choice.append:
        return run_coroutine(_by_append(route, planned, options, announce, progress, known))
    if not options.force:
        decision = _decisions(_asked(route, planned, None), route, options, known)[0]
        if not decision.build:
            record(planned)
            return skipped(planned, decision)
    with staged_plan(route.image, route.render, uri=route.uri) as staged:
        if staged.uri != planned.uri and not options.force:
            # A file changed after it was read: what is built is what was staged, so ask again.
            decision = _decisions(_asked(route, staged, None), route, options, known)[0]
            if not decision.build:
                record(staged)
                return skipped(staged, decision)
        backend = route.backend.get()
        result = build_by_engine(backend, staged, options, route.pushing, progress, announce)
        record(staged, f"built by the engine ({getattr(backend, 'name', 'a backend')}): {route.choice.why}")
        return result


@dataclass(frozen=True)
class Route:
    """What is known of a build before its files are read: the image as built (platforms
    overridden), whether it is pushed, the route chosen and the backend asked for."""

    image: Image
    pushing: bool
    choice: Choice
    backend: _Backend
    render: RenderOptions
    uri: str | None


def route_of(image: Image, options: BuildOptions, uri: str | None = None) -> Route:
    """The route of a build of `image` (not a reference)."""
    uri = None if uri is None else image_reference("uri", uri)
    if options.platform is not None:
        image = image.clone(platform=options.platform)  # type: ignore[arg-type]
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
    backend = _Backend(None if chosen == APPEND else chosen, whole_allowed=not choice.append)
    return Route(image, pushing, choice, backend, RenderOptions(ca_bundle=options.ca_bundle_path() is not None), uri)


def questions(route: Route, planned: BuildPlan) -> tuple[Question, ...]:
    """What the skip rule asks for a plan on its route: the image, and on the append route its
    engine part too (one round of requests for both)."""
    return _asked(route, planned, _engine_of(route, planned))


def _engine_of(route: Route, planned: BuildPlan) -> BuildPlan | None:
    """The engine part of a plan on the append route; None on the engine route."""
    return engine_subplan(planned) if route.choice.append else None


def _asked(route: Route, planned: BuildPlan, engine: BuildPlan | None) -> tuple[Question, ...]:
    if engine is None:
        return (Question(planned.uri, planned.platforms, route.pushing),)
    # A missing image is appended (or its engine part built): the precise reason would cost a round.
    return (Question(planned.uri, planned.platforms, True, hint=False), Question(engine.uri, engine.platforms, True))


class _Backend:
    """The engine backend, looked up when first needed: a build on the append route whose engine
    part is in the registry never needs one."""

    def __init__(self, chosen: object, *, whole_allowed: bool) -> None:
        self._chosen = chosen
        self._whole_allowed = whole_allowed
        self._backend: Builder | None = None

    def get(self) -> Builder:
        if self._backend is None:
            self._backend = get_builder(self._chosen)
        return self._backend

    def whole(self) -> Builder | None:
        """The backend when it is a Flyte SDK image builder object (it builds whole images)."""
        if not self._whole_allowed or (self._chosen is None and _config.configured_builder_object() is None):
            return None
        return self.get()


def _decisions(
    asked: tuple[Question, ...], route: Route, options: BuildOptions, known: Mapping[str, Decision] | None
) -> list[Decision]:
    """The skip rule's answer to each question, from `known` where it has one, the others asked
    at once."""
    known = known or {}
    missing = [q for q in asked if q.uri not in known]
    backend = route.backend.get() if any(not q.pushing for q in missing) else None
    asked_now = decide_all(missing, backend, options.strict, options.quiet)
    answers = {q.uri: d for q, d in zip(missing, asked_now, strict=True)}
    found = [known[q.uri] if q.uri in known else answers[q.uri] for q in asked]
    for decision in found:
        if decision.failure:
            raise RegistryError(decision.failure)
    return found


async def _by_append(
    route: Route,
    planned: BuildPlan,
    options: BuildOptions,
    announce: Callable[[str], None] | None,
    progress: Progress | None,
    known: Mapping[str, Decision] | None,
) -> ImageBuild:
    """The append route over one registry session: the image and its engine part checked in
    one round, then, when the image is missing (or forced), its files staged, the engine part
    built by the engine route when missing (or forced), and the file part appended to it."""
    import asyncio

    from .._append.push import step  # here: the engine route never makes layers
    from .._registry import Registry  # here: it loads httpx, which the engine route never needs

    async with Registry(insecure=_config.insecure_registries()) as registry:
        full, part = await _asked_registry(registry, route, planned, options, known)
        if not options.force and not full.build:
            record(planned)
            return skipped(planned, full)
        with staged_plan(route.image, route.render, uri=route.uri) as staged:
            if staged.uri != planned.uri:  # a file changed after it was read: ask about what was staged
                full, part = await _asked_registry(registry, route, staged, options, known)
                if not options.force and not full.build:
                    record(staged)
                    return skipped(staged, full)
            engine = engine_subplan(staged)
            asked = options.compression or _config.configured_compression()  # None: the engine part's
            if announce is not None:
                announce(staged.uri)
            with _sink(progress, options.quiet, staged.uri) as sink:
                if part.build or options.force:
                    why = "forced" if options.force else part.reason
                    step(sink, f"engine part {engine.uri}: {why}; building it with the engine")
                    backend = route.backend.get()
                    await asyncio.to_thread(build_by_engine, backend, engine, options, True, sink)
                    name = getattr(backend, "name", "a backend")
                    record(engine, f"built by the engine ({name}) as the engine part of {staged.uri}")
                    how = f"engine part {engine.uri} built by the engine ({name}), file part appended"
                    result = await append_to(registry, staged, engine, None, sink, how, asked)
                else:
                    step(sink, f"engine part {engine.uri}: in the registry ({part.reason})")
                    how = f"file part appended to the engine part {engine.uri}, which was in the registry"
                    result = await append_to(registry, staged, engine, part.digest, sink, how, asked)
            record(staged, result.reason)
    return result


async def _asked_registry(
    registry: Registry, route: Route, planned: BuildPlan, options: BuildOptions, known: Mapping[str, Decision] | None
) -> tuple[Decision, Decision]:
    """The skip rule for an image on the append route and for its engine part, asked at once."""
    asked = _asked(route, planned, engine_subplan(planned))
    missing = [q for q in asked if q.uri not in (known or {})]
    answers = await ask_registry(registry, missing)
    fresh = said(decide_from(missing, answers, None, strict=options.strict), options.quiet)
    found = dict(known or {}) | {q.uri: d for q, d in zip(missing, fresh, strict=True)}
    full, part = (found[q.uri] for q in asked)
    for decision in (full, part):
        if decision.failure:
            raise RegistryError(decision.failure)
    return full, part


def _dry_run(
    route: Route, planned: BuildPlan, options: BuildOptions, known: Mapping[str, Decision] | None
) -> ImageBuild:
    """What a build would do, from a plan that staged nothing."""
    engine = _engine_of(route, planned)
    asked = _asked(route, planned, engine)
    decisions = _decisions(asked, route, options, known) if not options.force or engine else []
    if not options.force and not decisions[0].build:
        return skipped(planned, decisions[0])
    if engine is not None:
        engine_there = not decisions[1].build and not options.force
        how = "in the registry" if engine_there else "after building it with the engine"
        layers = len(planned.image._layers) - file_part_start(planned.image)
        reason = f"dry run: would append {layers} file layer(s) to the engine part {asked[1].uri} ({how})"
        return ImageBuild(planned.uri, built=False, reason=reason, dockerfile=planned.dockerfile, path="append")
    return ImageBuild(planned.uri, built=False, reason="dry run: would build", dockerfile=planned.dockerfile)


def skipped(planned: BuildPlan, decision: Decision) -> ImageBuild:
    return ImageBuild(
        planned.uri, built=False, reason=decision.reason, digest=decision.digest, dockerfile=planned.dockerfile
    )


@contextlib.contextmanager
def _sink(progress: Progress | None, quiet: bool, title: str) -> Iterator[Progress]:
    if progress is not None:
        yield progress
        return
    with progress_view.progress_sink(quiet, title=title) as sink:
        yield sink


def _chosen_builder(builder: object) -> object:
    """The builder asked for: the one given, else an object given to `init(image_builder=...)`
    (used as if given here), else "append" when that is the configured name
    (FLYTE_IMAGES_BUILDER=append or image_builder = "append"), else None (the configured backend)."""
    chosen = _config.configured_builder_object() if builder is None else builder
    if chosen is None and _config.configured_builder() == APPEND:
        chosen = APPEND
    return chosen


def _by_object(
    backend: WholeImageBuilder, image: Image, planned: BuildPlan, options: BuildOptions, pushing: bool
) -> ImageBuild:
    """Build with a Flyte SDK image builder object, as `backends.WholeImageBuilder` describes:
    our skip rule first, then the object's `build_image`; what it raises that is not one of our
    errors becomes a BuildError naming it, as the SDK wraps a third-party builder's errors."""
    import inspect

    dry_run, force = options.dry_run, options.force
    if not force:
        question = Question(planned.uri, planned.platforms, pushing)
        decision = decide_all([question], backend, options.strict, options.quiet)[0]
        if not decision.build:
            return skipped(planned, decision)
    name = type(backend.target).__name__
    try:
        result = backend.target.build_image(image, dry_run=dry_run, wait=True, force=force)  # type: ignore[attr-defined]
        if inspect.isawaitable(result):
            result = run_coroutine(_awaited(result))
    except FlyteImagesError:
        raise
    except Exception as exc:
        raise BuildError(f"the image builder {name} failed to build {planned.uri}: {exc}") from exc
    uri = getattr(result, "uri", result if isinstance(result, str) else None)
    how = f"dry run by the image builder {name}" if dry_run else f"built by the image builder {name}"
    if not dry_run:
        record(planned, how)
    return ImageBuild(
        uri if isinstance(uri, str) else None,
        getattr(result, "remote_run", None),
        getattr(result, "build_run", None),
        built=not dry_run,
        reason=how,
        dockerfile=planned.dockerfile,
        path="" if dry_run else "builder",
    )


async def _awaited(result: Awaitable[T]) -> T:
    return await result
