"""`build_images(*envs)`: every image a deploy needs, each built once, in parallel.

Walks `depends_on`, resolves each environment's image ("auto" is the default image: the
`default` image reference when one is configured, else `Image.from_debian_base()`; another
string is an existing image used as is), deduplicates by uri (the identifier within one
repository), checks the registry (or the local engine) for all of them at once, and builds the
missing ones concurrently. The result is an `ImageCache`: environment name -> uri, with
identifiers, digests and what happened to each. A failed image does not lose the others: the
ImagesFailedError raised at the end carries the cache of everything else.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import _config
from ._build import build_image
from ._environment import Environment
from ._errors import FlyteImagesError, ImagesFailedError
from ._image import Image
from ._imagecache import ImageCache
from ._syncaio import syncaio


def environment_closure(envs: tuple[Environment, ...]) -> list[Environment]:
    """The environments and everything they depend on, each once, in a stable order."""
    seen: dict[str, Environment] = {}

    def visit(env: Environment) -> None:
        if not isinstance(env, Environment):
            raise TypeError(f"build_images takes environments, got {type(env).__name__}")
        known = seen.get(env.name)
        if known is env:
            return
        if known is not None:
            raise ValueError(f"two different environments are named {env.name!r}; environment names must be unique")
        seen[env.name] = env
        for dependency in env.depends_on:
            visit(dependency)

    for env in envs:
        visit(env)
    return list(seen.values())


def default_image() -> Image:
    """What image="auto" means: the `default` reference when configured, else the Debian base."""
    if "default" in _config.known_refs():
        return Image.from_ref_name("default")
    return Image.from_debian_base()


def image_of(env: Environment) -> Image | str:
    if isinstance(env.image, Image):
        return env.image
    if env.image in (None, "auto"):
        return default_image()
    return str(env.image)


@dataclass
class _Job:
    image: Image
    envs: list[str]
    uri: str | None = None
    status: str = "planned"
    digest: str | None = None
    reason: str = ""


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
) -> ImageCache:
    """Build the images of `envs` and of everything they depend on; return an ImageCache.

    Each distinct image is built once, by the same route as `build()` (one staged plan, the
    skip rule of `_skip`, the backend); images already in their registry (or, without a
    registry, in the local engine) are skipped unless `force`; `concurrency` images are handled
    at once (default 2). `dry_run` plans and checks, building nothing. Environments found in
    `seed_cache` keep the uri recorded there. `copy_style` is accepted for compatibility.

    Example:
        cache = flyte_images.build_images(train_env, serve_env)
        cache.image_lookup["train"]
    """
    del copy_style
    cache = ImageCache()
    jobs: dict[Image, _Job] = {}
    for env in environment_closure(envs):
        if seed_cache is not None and env.name in seed_cache.image_lookup:
            _record_seed(cache, env.name, seed_cache)
            continue
        try:
            image = image_of(env)
            if isinstance(image, str) or image.is_reference:
                uri = image if isinstance(image, str) else image.uri
                cache.image_lookup[env.name], cache.identifiers[env.name] = uri, None
                cache.status[env.name], cache.reasons[env.name] = "reference", "an existing image, used as is"
                cache.digests[env.name] = None
                continue
            if platform is not None:
                image = image.clone(platform=platform)  # type: ignore[arg-type]
        except FlyteImagesError as exc:
            cache.status[env.name], cache.reasons[env.name] = "failed", str(exc)
            continue
        jobs.setdefault(image, _Job(image, [])).envs.append(env.name)
    options = {"force": force, "push": push, "builder": builder, "require_check": require_check}
    if dry_run:
        _plan_all(list(jobs.values()), options)
    else:
        _build_all(list(jobs.values()), concurrency or 2, options, quiet)
    for job in jobs.values():
        for name in job.envs:
            if job.uri is not None:
                cache.image_lookup[name] = job.uri
                cache.identifiers[name] = job.uri.rsplit(":", 1)[1]
                cache.digests[name] = job.digest
            cache.status[name] = job.status
            cache.reasons[name] = job.reason
    if "failed" in cache.status.values():
        raise ImagesFailedError(cache)
    return cache


def _record_seed(cache: ImageCache, name: str, seed: ImageCache) -> None:
    cache.image_lookup[name] = seed.image_lookup[name]
    cache.identifiers[name] = seed.identifiers.get(name)
    cache.digests[name] = seed.digests.get(name)
    cache.status[name], cache.reasons[name] = "exists", "from the seed cache"


def _plan_all(jobs: list[_Job], options: dict[str, Any]) -> None:
    """Dry run: plan every image and apply the skip rule to all of them at once."""
    from ._builders import get_builder
    from ._plan import BuildPlan, plan
    from ._skip import Question, decide, strict_default

    planned: list[tuple[_Job, BuildPlan, bool]] = []
    for job in jobs:
        try:
            made = plan(job.image)
        except FlyteImagesError as exc:
            job.status, job.reason = "failed", str(exc)
            continue
        job.uri = made.uri
        pushing = (
            bool(job.image.registry or _config.configured_registry()) if options["push"] is None else options["push"]
        )
        planned.append((job, made, pushing))
    if options["force"]:
        for job, _made, _pushing in planned:
            job.reason = "forced: would build"
        return
    questions = [Question(made.uri, made.platforms, pushing) for _job, made, pushing in planned]
    decisions = decide(questions, get_builder(options["builder"]), strict=strict_default(options["require_check"]))
    for (job, _made, _pushing), decision in zip(planned, decisions, strict=True):
        if decision.failure:
            job.status, job.reason = "failed", decision.failure
        elif decision.build:
            job.reason = f"would build ({decision.reason})"
        else:
            job.status, job.reason, job.digest = "exists", decision.reason, decision.digest


_say_lock = threading.Lock()


def _say(line: str) -> None:
    """One whole line on stderr, even with several builds reporting at once."""
    with _say_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _build_all(jobs: list[_Job], concurrency: int, options: dict[str, Any], quiet: bool) -> None:
    def one(job: _Job) -> None:
        started = time.monotonic()

        def announce(uri: str) -> None:
            job.uri = uri  # a failure after this point is reported with the uri it had
            if not quiet:
                _say(f"building {uri} for {', '.join(job.envs)}")

        try:
            result = build_image(job.image, quiet=True, announce=announce, **options)
        except FlyteImagesError as exc:
            job.status, job.reason = "failed", str(exc)
            if not quiet:
                _say(f"failed {', '.join(job.envs)}: {exc}")
            return
        job.uri, job.digest = result.uri, result.digest
        if result.built:
            job.status, job.reason = "built", f"built in {time.monotonic() - started:.1f} s"
        else:
            job.status, job.reason = "exists", result.reason
        if not quiet:
            verb = "built" if result.built else "exists"
            _say(f"{verb} {job.uri} for {', '.join(job.envs)} ({job.reason})")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, jobs))
