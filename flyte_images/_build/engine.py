"""The engine route: a staged plan built by a backend (Docker's BuildKit, a BuildKit daemon, a
third-party backend), which receives exactly the staged context and the plan's Dockerfile."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from flyte_images.builders.base import BuildRequest, cache_tag, check_compression, platform_cache_specs

from .. import _config
from .._errors import BuildError, ConfigError
from .._plan.plan import BuildPlan
from . import progress as progress_view
from .hints import add_hint
from .options import BuildOptions
from .records import remember_pushed
from .result import ImageBuild
from .secrets import Secrets, secret_sources

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder, Progress


def build_by_engine(
    backend: Builder,
    staged: BuildPlan,
    options: BuildOptions,
    pushing: bool,
    progress: Progress | None,
    announce: Callable[[str], None] | None = None,
) -> ImageBuild:
    """Build `staged` (open: its context folder is locked) with `backend`; push it or load it.
    Secrets are written for the build only (a private folder beside the context)."""
    assert staged.context is not None
    if not pushing and not backend.loads:
        raise ConfigError(
            f"the {backend.name} backend cannot load images into a local engine, and {staged.uri} has no "
            "registry: give the image a registry (or push=True), or build with a backend that loads"
        )
    private = staged.context.parent / "secrets"
    try:
        secrets = secret_sources(staged, options.ca_bundle_path(), private)
        if announce is not None:
            announce(staged.uri)
        caches = cache_specs(options, staged, pushing, backend)
        result = _run_backend(backend, staged, secrets, pushing, caches, options, progress)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    if pushing:
        remember_pushed(staged, result.digest)
    return result


def cache_specs(
    options: BuildOptions, staged: BuildPlan, pushing: bool, backend: Builder
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """cache_from/cache_to for the backend: the caller's (else FLYTE_DOCKER_BUILDER_CACHE_FROM and
    _TO, both set, as flyte 2.12 reads them), plus the registry cache when asked: one tag per
    platform (`REPO:buildcache-linux-amd64`), each read and written by that platform's build only,
    so the caches of platforms built on different daemons never overwrite each other. A cache export
    asked of a backend that cannot write one is a warning (the build still imports), not silence."""
    given = (options.cache_from, options.cache_to)
    if not any(given):
        given = _config.flyte_builder_caches()
    mode = options.cache or _config.configured_cache()
    if mode not in (None, "none", "registry"):
        raise ConfigError(f"cache={mode!r} is not 'registry' or 'none'")
    # An inline cache travels inside the image itself, which every backend writes.
    exported = [
        spec.split(",", 1)[0] if spec.startswith("type=") else "type=registry"
        for spec in given[1]
        if not spec.startswith("type=inline")
    ]
    if exported and not backend.exports_cache:
        # Only the cache's type is named: a cache spec may carry credentials (s3's keys).
        warnings.warn(
            f"{staged.uri}: cache_to ({', '.join(exported)}) asks the {backend.name} backend to export a layer "
            "cache, which it cannot; BuildKit may refuse it or write nothing: build with a backend that exports "
            "one (buildkit)",
            UserWarning,
            stacklevel=2,
        )
    if mode != "registry":
        return given
    if not pushing:
        raise ConfigError(
            f"cache='registry' keeps the layer cache in the image's registry, but {staged.uri} is not pushed: "
            "give the image a registry, or build without cache='registry'"
        )
    cache_from, cache_to = platform_cache_specs(staged.repository, staged.platforms)
    if not backend.exports_cache and not given[1]:
        # It still imports the cache, so the warning says what is missing, not that nothing works.
        tags = ", ".join(f"{staged.repository}:{cache_tag(p)}" for p in staged.platforms)
        warnings.warn(
            f"{staged.uri}: cache='registry' imports {tags}, but the {backend.name} "
            "backend cannot export a layer cache, so the cache is never written: "
            "build with builder='buildkit' (--builder buildkit), or export it from a build that can",
            UserWarning,
            stacklevel=2,
        )
    return (*cache_from, *given[0]), given[1] or (cache_to if backend.exports_cache else ())


def _run_backend(
    backend: Builder,
    staged: BuildPlan,
    secrets: Secrets,
    pushing: bool,
    caches: tuple[tuple[str, ...], tuple[str, ...]],
    options: BuildOptions,
    progress: Progress | None,
) -> ImageBuild:
    assert staged.context is not None and staged.dockerfile_path is not None
    compression = options.layer_compression()
    check_compression(backend, compression, pushing)
    request = BuildRequest(
        context=staged.context,
        dockerfile=staged.dockerfile_path,
        tags=(staged.uri,),
        platforms=staged.platforms,
        push=pushing,
        secrets=secrets.sources,
        cache_from=tuple(caches[0]),
        cache_to=tuple(caches[1]),
        labels=dict(staged.labels),
        redact=secrets.values,
        no_cache=options.no_cache,
        compression=compression,
    )
    try:
        if progress is not None:
            result = backend.build(request, progress)
        else:
            with progress_view.progress_sink(options.quiet, title=staged.uri) as sink:
                result = backend.build(request, sink)
    except BuildError as exc:
        add_hint(exc)
        raise
    return ImageBuild(
        staged.uri,
        built=True,
        digest=result.digest,
        dockerfile=staged.dockerfile,
        path="engine",
        nodes=result.nodes,
        waited=result.waited,
    )
