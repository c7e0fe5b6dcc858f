"""`build(image)`: from an Image to an image in the local engine or a registry.

    staged plan (one read of every file, copied while hashed) -> skip rule (`_skip`)
    -> backend (exactly the staged bytes) -> records (push record, explain)

An image with a registry (argument, `init`, or FLYTE_IMAGES_REGISTRY) is pushed; one without is
loaded into the local engine. The uri reported, the tag the engine gets, the identity label and
the records all come from the one plan, so they always agree with the bytes inside the image.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import _config
from ._errors import BuildError, ConfigError, FlyteImagesError, RegistryError, SecretNotFoundError
from ._hints import add_hint
from ._image import Image
from ._interrupt import run_coroutine
from ._plan import BuildPlan, plan, repository_of, staged_plan
from ._render import CA_SECRET_ID, RenderOptions
from ._secret import unusable_secrets
from ._skip import Decision, Question, decide, strict_default
from ._syncaio import syncaio
from ._validation import image_reference
from ._validation import platforms as check_platforms

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder, Progress, SecretSource

    from ._builders import WholeImageBuilder

CA_BUNDLE_ENV = "FLYTE_IMAGES_CA_BUNDLE"
MIN_SECRET_LENGTH = 3
T = TypeVar("T")


class ImageBuild(str):
    """The uri of a built (or already existing) image; a `str`, with details as attributes.

    `uri` the image reference, `built` whether a build ran, `reason` why not (or how it was
    built), `digest` the pushed manifest digest or loaded image id when known, `dockerfile` the
    rendered text, `path` "engine" or "append" for a build that ran (see `build`), "builder" for
    one a Flyte SDK image builder object made (`init(image_builder=obj)`).
    It also constructs and reads as the Flyte SDK's `ImageBuild(uri, remote_run, build_run)`:
    `remote_run` and `build_run` (a remote build's run) are None here, as for the SDK's local
    builder. Builds here always finish before returning, so a build's `uri` is always a str; an
    `ImageBuild(uri=None)` made as in the SDK (a remote build still running) keeps `uri` None,
    as the SDK's does, and reads as the empty string.
    """

    uri: str | None
    remote_run: object | None
    build_run: object | None
    built: bool
    reason: str
    digest: str | None
    dockerfile: str
    path: str

    def __new__(
        cls,
        uri: str | None,
        remote_run: object | None = None,
        build_run: object | None = None,
        *,
        built: bool = False,
        reason: str = "",
        digest: str | None = None,
        dockerfile: str = "",
        path: str = "",
    ) -> ImageBuild:
        value = super().__new__(cls, uri or "")
        value.uri = uri
        value.remote_run = remote_run
        value.build_run = build_run
        value.built = built
        value.reason = reason
        value.digest = digest
        value.dockerfile = dockerfile
        value.path = path
        return value

    def __getnewargs__(self) -> tuple[str | None, object | None, object | None]:  # type: ignore[override]
        # Copies and pickles keep the SDK's fields; the details are restored from __dict__.
        return (self.uri, self.remote_run, self.build_run)


@dataclass(frozen=True)
class _Secrets:
    sources: tuple[SecretSource, ...]
    values: tuple[str, ...]  # only to redact them from build output


def _secret_value(secret: object, var: str) -> tuple[SecretSource, str]:
    from flyte_images.builders.base import SecretSource

    key = getattr(secret, "key", var)
    build_id = getattr(secret, "build_id", var)
    if os.environ.get(var):
        source, value = SecretSource(id=build_id, env=var), os.environ[var]
    elif os.environ.get(f"{var}_FILE"):
        path = Path(os.environ[f"{var}_FILE"])
        if not path.is_file():
            raise SecretNotFoundError(f"secret {key!r}: {var}_FILE names {path}, which does not exist")
        source, value = SecretSource(id=build_id, file=path), path.read_text(errors="replace")
    else:
        raise SecretNotFoundError(
            f"secret {key!r} has no value on this machine: set the environment variable {var}, "
            f"or {var}_FILE to a file holding it"
        )
    if len(value.strip()) < MIN_SECRET_LENGTH:
        raise SecretNotFoundError(
            f"secret {key!r} (from {var}) is shorter than {MIN_SECRET_LENGTH} characters; a value that "
            "short cannot be kept out of build logs (it would match ordinary output). Use the real value"
        )
    return source, value


def _secret_sources(built: BuildPlan, ca_bundle: Path | None, private: Path) -> _Secrets:
    """Where every build secret comes from. Index URLs with credentials are written to files in
    `private` (mode 600, removed after the build) and mounted like any other secret."""
    from urllib.parse import unquote, urlsplit

    from flyte_images.builders.base import SecretSource

    sources: list[SecretSource] = []
    values: list[str] = []
    unusable_secrets(built.secrets)
    for secret in built.secrets:
        source, value = _secret_value(secret, secret.source_env_var)
        sources.append(source)
        values.append(value)
    for secret_id, url in built.url_secrets:
        private.mkdir(mode=0o700, exist_ok=True)
        path = private / secret_id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(url)
        sources.append(SecretSource(id=secret_id, file=path))
        parts = urlsplit(url)
        values += [url, *(v for v in (parts.password, unquote(parts.password or "")) if v)]
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise BuildError(f"CA bundle {ca_bundle} does not exist (from ca_bundle= or {CA_BUNDLE_ENV})")
        sources.append(SecretSource(id=CA_SECRET_ID, file=ca_bundle))
    return _Secrets(tuple(sources), tuple(values))


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
) -> ImageBuild:
    """Build `image` unless it already exists; return its uri (an `ImageBuild`, a str).

    Pushes when the image has a registry, loads into the local engine otherwise (`push`
    overrides). `force` builds even if the image exists; `dry_run` plans and reports only.
    `platform` overrides the image's platforms; `builder` names a backend (default: docker) or
    is one; `cache_from`/`cache_to` are passed to BuildKit; `ca_bundle` (or
    FLYTE_IMAGES_CA_BUNDLE) is a CA file mounted as a secret into every downloading step, never
    into the image. When the registry cannot be asked, the image is built anyway with a
    warning, or, with `require_check` (the default when CI is set), a RegistryError says why.
    `cache="registry"` (or FLYTE_IMAGES_CACHE / the config key `cache`) keeps BuildKit's layer
    cache in the image's repository under the tag `buildcache` and imports it on the next build:
    an ephemeral CI runner then re-runs only the steps whose inputs changed (exported by backends
    that can, such as `buildkit`; the others only import it); `cache="none"` turns it off.
    `wait` is accepted for compatibility: builds always complete before this returns.

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
    return build_image(
        image,
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
    )


def build_image(
    image: Image,
    *,
    dry_run: bool = False,
    force: bool = False,
    platform: str | tuple[str, ...] | None = None,
    builder: str | Builder | None = None,
    push: bool | None = None,
    cache_from: tuple[str, ...] = (),
    cache_to: tuple[str, ...] = (),
    ca_bundle: Path | str | None = None,
    quiet: bool = False,
    require_check: bool | None = None,
    announce: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    cache: str | None = None,
    uri: str | None = None,
) -> ImageBuild:
    """`build`, with `announce(uri)` called when a build really starts (after the skip rule) and
    its progress sent to `progress` (instead of this process's own progress view). `uri`, when
    given, is the reference the image is checked, tagged and pushed as instead of
    repository:identifier (for callers that own the tag, such as the flyte plugin); the identity
    label still carries our identifier."""
    uri = None if uri is None else image_reference("uri", uri)
    if image.is_reference:
        return ImageBuild(image.uri, built=False, reason="an existing image, used as is")
    if dry_run:  # a dry run stands for the build, which refuses these before anything runs
        unusable_secrets(tuple(s for layer in image._layers for s in getattr(layer, "secret_mounts", ())))
    from ._append.build import APPEND, Choice, choose
    from ._builders import WholeImageBuilder, get_builder

    if platform is not None:
        image = image.clone(platform=check_platforms(platform))  # type: ignore[arg-type]
    pushing = bool(image.registry or _config.configured_registry()) if push is None else push
    chosen = _chosen_builder(builder)
    choice = choose(image, chosen, pushing)
    if choice.append and uri is not None and uri.rpartition(":")[0] != repository_of(image):
        choice = Choice(False, f"the tag {uri} is outside the image's repository {repository_of(image)}")
    ca_text = str(ca_bundle) if ca_bundle else _config.configured_ca_bundle()
    ca_path = Path(ca_text) if ca_text else None
    options = RenderOptions(ca_bundle=ca_path is not None)
    strict = strict_default(require_check)
    if choice.append:
        from ._append.run import by_append

        engine_options = {
            "builder": None if chosen == APPEND else chosen,
            "cache_from": cache_from,
            "cache_to": cache_to,
            "ca_bundle": ca_bundle,
            "require_check": require_check,
            "cache": cache,
        }
        appended = by_append(
            image,
            options,
            uri=uri,
            dry_run=dry_run,
            force=force,
            strict=strict,
            quiet=quiet,
            announce=announce,
            progress=progress,
            engine_options=engine_options,
        )
        if appended is not None:
            return appended
        chosen = None if chosen == APPEND else chosen
        choice = Choice(False, "its file layers are too big to append from memory")
    backend = get_builder(chosen)
    if isinstance(backend, WholeImageBuilder):
        return _by_object(backend, image, plan(image, options, uri=uri), dry_run, force, (pushing, strict, quiet))
    if dry_run:
        planned = plan(image, options, uri=uri, check_locks=True)
        decision = None if force else _decide(planned, pushing, backend, strict, quiet)
        if decision is not None and not decision.build:
            return _skipped(planned, decision)
        return ImageBuild(planned.uri, built=False, reason="dry run: would build", dockerfile=planned.dockerfile)
    with staged_plan(image, options, uri=uri) as staged:
        if not force:
            decision = _decide(staged, pushing, backend, strict, quiet)
            if not decision.build:
                _record(staged)
                return _skipped(staged, decision)
        assert staged.context is not None
        private = staged.context.parent / "secrets"
        try:
            secrets = _secret_sources(staged, ca_path, private)
            if announce is not None:
                announce(staged.uri)
            caches = _caches(cache, staged, pushing, backend, (cache_from, cache_to))
            result = _run_backend(backend, staged, secrets, pushing, caches, quiet, progress)
        finally:
            shutil.rmtree(private, ignore_errors=True)
    if pushing:
        remember_pushed(staged, result.digest)
    _record(staged, f"built by the engine ({getattr(backend, 'name', 'a backend')}): {choice.why}")
    return result


def _chosen_builder(builder: str | Builder | None) -> object:
    """The builder asked for: the one given, else an object given to `init(image_builder=...)`
    (used as if given here), else "append" when that is the configured name
    (FLYTE_IMAGES_BUILDER=append or image_builder = "append"), else None (the configured backend)."""
    from ._append.build import APPEND

    chosen = _config.configured_builder_object() if builder is None else builder
    if chosen is None and _config.configured_builder() == APPEND:
        chosen = APPEND
    return chosen


def _by_object(
    backend: WholeImageBuilder,
    image: Image,
    planned: BuildPlan,
    dry_run: bool,
    force: bool,
    check: tuple[bool, bool, bool],
) -> ImageBuild:
    """Build with a Flyte SDK image builder object, as `_builders.WholeImageBuilder` describes:
    our skip rule first, then the object's `build_image`; what it raises that is not one of our
    errors becomes a BuildError naming it, as the SDK wraps a third-party builder's errors."""
    import inspect

    pushing, strict, quiet = check
    if not force:
        decision = _decide(planned, pushing, backend, strict, quiet)
        if not decision.build:
            return _skipped(planned, decision)
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
        _record(planned, how)
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


def remember_pushed(staged: BuildPlan, digest: str | None) -> None:
    """Note a push, so the next existence check trusts it for a while (see `_skip`)."""
    from ._registry.record import PlatformCache, remember_push

    remember_push(staged.uri, digest, staged.platforms)
    if digest and len(staged.platforms) == 1:  # a single-platform push is a plain manifest
        known = PlatformCache.default()
        known.put(digest, staged.platforms)
        known.save()


def _caches(
    cache: str | None,
    staged: BuildPlan,
    pushing: bool,
    backend: Builder,
    given: tuple[tuple[str, ...], tuple[str, ...]],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """cache_from/cache_to for the backend: the caller's (else FLYTE_DOCKER_BUILDER_CACHE_FROM and
    _TO, both set, as flyte 2.12 reads them), plus the registry cache when asked."""
    if not any(given):
        given = _config.flyte_builder_caches()
    mode = cache or _config.configured_cache()
    if mode not in (None, "none", "registry"):
        raise ConfigError(f"cache={mode!r} is not 'registry' or 'none'")
    if mode != "registry":
        return given
    if not pushing:
        raise ConfigError(
            f"cache='registry' keeps the layer cache in the image's registry, but {staged.uri} is not pushed: "
            "give the image a registry, or build without cache='registry'"
        )
    from flyte_images.builders.buildkit import registry_cache_specs

    cache_from, cache_to = registry_cache_specs(staged.repository)
    exports = getattr(backend, "exports_cache", False)  # buildx's docker driver cannot export one
    return (*cache_from, *given[0]), given[1] or (cache_to if exports else ())


def _decide(planned: BuildPlan, pushing: bool, backend: Builder, strict: bool, quiet: bool) -> Decision:
    return decide_all([Question(planned.uri, planned.platforms, pushing)], backend, strict, quiet)[0]


def decide_all(questions: list[Question], backend: Builder | None, strict: bool, quiet: bool) -> list[Decision]:
    """The skip rule for each question, asked at once; a failure raises, warnings go to stderr."""
    decisions = decide(questions, backend, strict=strict)
    for decision in decisions:
        if decision.failure:
            raise RegistryError(decision.failure)
        if decision.warning and not quiet:
            print(decision.warning, file=sys.stderr)
    return decisions


def _skipped(planned: BuildPlan, decision: Decision) -> ImageBuild:
    return ImageBuild(
        planned.uri, built=False, reason=decision.reason, digest=decision.digest, dockerfile=planned.dockerfile
    )


def _record(planned: BuildPlan, how: str = "") -> None:
    """Keep what this build was made of, for `flyte-images explain` (best effort)."""
    from dataclasses import replace

    from ._explain import breakdown, save_record
    from ._plan import description_key

    with contextlib.suppress(OSError, FlyteImagesError):
        save_record(description_key(planned.image), replace(breakdown(planned), how=how))


def _run_backend(
    backend: Builder,
    staged: BuildPlan,
    secrets: _Secrets,
    pushing: bool,
    caches: tuple[tuple[str, ...], tuple[str, ...]],
    quiet: bool,
    progress: Progress | None,
) -> ImageBuild:
    from flyte_images.builders.base import BuildRequest

    from ._progress import progress_sink

    assert staged.context is not None and staged.dockerfile_path is not None
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
    )
    try:
        if progress is not None:
            result = backend.build(request, progress)
        else:
            with progress_sink(quiet, title=staged.uri) as sink:
                result = backend.build(request, sink)
    except BuildError as exc:
        add_hint(exc)
        raise
    return ImageBuild(staged.uri, built=True, digest=result.digest, dockerfile=staged.dockerfile, path="engine")
