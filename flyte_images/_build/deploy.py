"""`build_images(*envs)`: every image a deploy needs, each built once, in parallel.

Walks `depends_on`, resolves each environment's image ("auto" is the default image: the
`default` image reference when one is configured, else `Image.from_debian_base()`; another
string is an existing image used as is), deduplicates by uri (the identifier within one
repository), plans every image and asks the registry (or the local engine) about all of them at
once, through one session, before any build starts; then builds the missing ones concurrently,
each by the one route of `build()`. An image whose tag exists is never staged. The result is an
`ImageCache`: environment name -> uri, with identifiers, digests and what happened to each. A
failed image does not lose the others: the ImagesFailedError raised at the end carries the cache
of everything else.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import _config, _interrupt
from .._errors import FlyteImagesError
from .._image.image import Image
from .._imagecache import ImageCache, ImagesFailedError
from .._plan.plan import BuildPlan, plan
from .._syncaio import syncaio
from .decide import Decision, Question, decide
from .job import Route
from .options import BuildOptions
from .result import ImageBuild
from .route import build_planned, route_of, tag_as

if TYPE_CHECKING:
    from flyte_images.builders.base import Progress, ProgressEvent

    from .._image.environment import Environment


@dataclass
class _Job:
    image: Image
    envs: list[str]
    uri: str | None = None
    status: str = "planned"
    digest: str | None = None
    reason: str = ""
    known: dict[str, Decision] | None = None  # the skip rule's answers, asked with every other image's
    planned: tuple[Route, BuildPlan] | None = None  # its route and plan, made once
    nodes: Mapping[str, str] = field(default_factory=dict)  # platform -> the daemon that built it
    waited: Mapping[str, float] = field(default_factory=dict)  # platform -> seconds waited for a slot


@syncaio
def build_images(
    *envs: Environment,
    copy_style: str = "loaded_modules",
    seed_cache: ImageCache | None = None,
    concurrency: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    push: bool | None = None,
    platform: str | tuple[str, ...] | None = None,
    builder: str | None = None,
    quiet: bool = False,
    require_check: bool | None = None,
    no_cache: bool = False,
    tags: tuple[str, ...] | list[str] | str = (),
    compression: str | None = None,
) -> ImageCache:
    """Build the images of `envs` and of everything they depend on; return an ImageCache.

    Each distinct image is built once, by the same route as `build()` (one staged plan, the
    skip rule of `_skip`, the backend); images already in their registry (or, without a
    registry, in the local engine) are skipped unless `force`; `concurrency` images are handled
    at once (default 2). `dry_run` plans and checks, building nothing. Environments found in
    `seed_cache` keep the uri recorded there. `no_cache` re-runs every build step instead of
    reusing BuildKit's layer cache (it decides nothing: combine it with `force` to rebuild an
    image that exists). `tags` are more tags pushed beside each image's content tag in its own
    repository (an image that exists gets them without a build). `compression` ("gzip" or
    "zstd") is how pushed layers are compressed, as in `build()`. `copy_style` decides the images' code-bundle layers
    (`with_code_bundle`): with "none" the code is copied into the image, otherwise it travels
    with the deploy and the layer copies nothing.

    Example:
        cache = flyte_images.build_images(train_env, serve_env)
        cache.image_lookup["train"]
    """
    options = BuildOptions.of(
        dry_run=dry_run,
        force=force,
        platform=platform,
        builder=builder,
        push=push,
        require_check=require_check,
        no_cache=no_cache,
        tags=tags,
        compression=compression,
    )
    # Here: a build of Images alone (the CLI's, `build()`) never loads the environment model
    # (policies, resources: about 10 ms of every command).
    from .._image.environment import environment_closure, image_of

    named: list[tuple[str, Environment | Image]] = []
    for env in environment_closure(envs):
        image = image_of(env)
        # Code bundles: the code travels with the deploy unless copy_style is "none", as in flyte.
        named.append((env.name, _with_code(image, copy_style) if isinstance(image, Image) else env))
    return build_named(named, seed_cache, concurrency or 2, options, None if quiet else _Said())


def build_named(
    targets: Sequence[tuple[str, Environment | Image]],
    seed_cache: ImageCache | None,
    concurrency: int,
    options: BuildOptions,
    report: Reporter | None,
) -> ImageCache:
    """Build the images of named environments and images (the CLI names plain Images by their
    variable); each distinct image once. The ImageCache holds in `image_lookup` only images that
    exist (built, found, or used as is); a failure is in `status` and `reasons` only."""
    cache = ImageCache()
    jobs: dict[Image, _Job] = {}
    for name, target in targets:
        if seed_cache is not None and name in seed_cache.image_lookup:
            _record_seed(cache, name, seed_cache)
            continue
        try:
            image = target if isinstance(target, Image) else _image_of(target)
            if isinstance(image, str) or image.is_reference:
                uri = image if isinstance(image, str) else image.uri
                cache.image_lookup[name], cache.identifiers[name] = uri, None
                cache.status[name], cache.reasons[name] = "reference", "an existing image, used as is"
                cache.digests[name] = None
                continue
            if options.platform is not None:
                image = image.clone(platform=options.platform)  # type: ignore[arg-type]
        except FlyteImagesError as exc:
            cache.status[name], cache.reasons[name] = "failed", str(exc)
            continue
        jobs.setdefault(image, _Job(image, [])).envs.append(name)
    _decide_all(list(jobs.values()), options)
    if options.tags and not options.dry_run:
        for job in jobs.values():
            if job.status == "exists" and job.uri is not None and job.planned and job.planned[0].pushing:
                try:
                    tag_as(ImageBuild(job.uri, built=False, digest=job.digest), options.tags)
                except FlyteImagesError as exc:
                    job.status, job.reason = "failed", str(exc)
    if not options.dry_run:
        waiting = [job for job in jobs.values() if job.status == "planned"]
        _build_all(waiting, concurrency, replace(options, platform=None), report)
    uris: dict[str, str] = {}
    for job in jobs.values():
        for name in job.envs:
            cache.status[name], cache.reasons[name] = job.status, job.reason
            if job.uri is None:
                continue
            uris[name] = job.uri
            if job.status not in ("failed", "planned"):  # only images that exist now
                cache.image_lookup[name] = job.uri
                cache.identifiers[name] = job.uri.rsplit(":", 1)[1]
                cache.digests[name] = job.digest
                if job.nodes:
                    cache.nodes[name], cache.waited[name] = dict(job.nodes), dict(job.waited)
    if "failed" in cache.status.values():
        raise ImagesFailedError(cache, uris)
    return cache


def _image_of(env: Environment) -> Image | str:
    from .._image.environment import image_of  # here: see build_images

    return image_of(env)


def _with_code(image: Image, copy_style: str) -> Image:
    from .._image.layers.code import resolve_code_bundle_layer

    return resolve_code_bundle_layer(image, copy_style, Path(_config.configured_root_dir() or Path.cwd()))


def _record_seed(cache: ImageCache, name: str, seed: ImageCache) -> None:
    cache.image_lookup[name] = seed.image_lookup[name]
    cache.identifiers[name] = seed.identifiers.get(name)
    cache.digests[name] = seed.digests.get(name)
    cache.status[name], cache.reasons[name] = "exists", "from the seed cache"


def _decide_all(jobs: list[_Job], options: BuildOptions) -> None:
    """Plan every image (hashing its files, staging nothing) and apply the skip rule to all of
    them at once: one registry session for every check. An image found is done; one that must
    be built keeps its answers, so its build does not ask again."""
    planned: list[tuple[_Job, Route, tuple[Question, ...]]] = []
    for job in jobs:
        try:
            route = route_of(job.image, options)
            made = plan(route.image, route.render, check_locks=options.dry_run and route.stages)
            asked = route.questions(made)
        except FlyteImagesError as exc:
            job.status, job.reason = "failed", str(exc)
            continue
        job.uri, job.planned = made.uri, (route, made)
        planned.append((job, route, asked))
    if options.force:
        for job, _route, _asked in planned:
            job.reason = f"forced: would build {job.uri}"
        return
    everything = [q for _job, _route, asked in planned for q in asked]
    local = next((route for _job, route, asked in planned if not asked[0].pushing), None)
    # The backend answers for loaded images only.
    decisions = iter(decide(everything, local.backend.get() if local else None, strict=options.strict))
    for job, route, asked in planned:
        answers = [next(decisions) for _q in asked]
        job.known = {q.uri: d for q, d in zip(asked, answers, strict=True)}
        found = answers[0]
        if found.failure:
            job.status, job.reason = "failed", found.failure
        elif not found.build:
            job.status, job.reason, job.digest = "exists", found.reason, found.digest
        elif options.dry_run:
            try:  # the backend a build would use is looked up: a misconfigured one fails here
                where = route.routing(job.planned[1]) if job.planned else ""
            except FlyteImagesError as exc:
                job.status, job.reason = "failed", str(exc)
                continue
            job.reason = f"would build {job.uri} ({found.reason}{'; ' + where if where else ''})"
        elif found.warning and not options.quiet:
            print(found.warning, file=sys.stderr)


class Reporter(Protocol):
    """Where build_named reports each image's progress (the CLI's Board, or plain lines)."""

    def start(self, name: str, uri: str) -> Progress: ...

    def finish(self, name: str, uri: str, state: str, took: float) -> None: ...


class _Said:
    """The library's report: one whole line on stderr per image started and finished."""

    _lock = threading.Lock()

    def start(self, name: str, uri: str) -> Progress:
        self._say(f"building {uri} for {name}")
        return lambda _event: None

    def finish(self, name: str, uri: str, state: str, took: float) -> None:
        self._say(f"{state} {uri} for {name} in {took:.1f} s")

    def _say(self, line: str) -> None:
        with self._lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


def _build_all(jobs: list[_Job], concurrency: int, options: BuildOptions, report: Reporter | None) -> None:
    quiet = replace(options, quiet=True)

    def one(job: _Job) -> None:
        started = time.monotonic()
        label = ", ".join(job.envs)
        sinks: list[Progress] = []

        def announce(uri: str) -> None:
            job.uri = uri  # a failure after this point is reported with the uri it had
            if report is not None:
                sinks.append(report.start(label, uri))

        def progress(event: ProgressEvent) -> None:
            for sink in sinks:
                sink(event)

        done = "failed"  # what happened, in the same words on the progress line and in the summary
        try:
            assert job.planned is not None
            route, made = job.planned
            result = build_planned(route, made, quiet, announce=announce, progress=progress, known=job.known)
        except FlyteImagesError as exc:
            job.status, job.reason = "failed", str(exc)
        else:
            job.uri, job.digest, job.nodes, job.waited = result.uri, result.digest, result.nodes, result.waited
            job.status = done = "built" if result.built else "exists"
            if result.built and result.path == "append":
                done = "appended"
        took = time.monotonic() - started  # one figure for both
        if done == "appended":
            job.reason = f"appended in {took:.1f} s: {result.reason}"
        elif done == "built":
            job.reason = f"built in {took:.1f} s" + (f" ({result.where()})" if result.nodes else "")
        elif done == "exists":
            job.reason = result.reason
        if report is not None and sinks:
            report.finish(label, str(job.uri), done, took)

    _in_threads(one, jobs, max(1, concurrency))


def _in_threads(fn: Callable[[_Job], None], jobs: list[_Job], workers: int) -> None:
    """`fn` of every job, at most `workers` at once, started in order. The first job, in order,
    that raised re-raises here; jobs not started by then never start and the running ones are
    waited for. An interrupt of the waiting thread (Ctrl-C, SIGTERM) also stops the builds that
    run: their processes are told to stop, so the wait is short."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flyte-images-build")
    try:
        for future in [pool.submit(fn, job) for job in jobs]:
            future.result()
    except BaseException as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        if not isinstance(exc, Exception):
            _interrupt.stop_all()
        raise
    finally:
        pool.shutdown(wait=True)
