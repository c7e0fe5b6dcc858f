"""`build(image)`: from an Image to an image in the local engine or a registry.

validate -> identifier and uri -> skip if it already exists -> render -> stage -> backend.
An image with a registry (argument, `init`, or FLYTE_IMAGES_REGISTRY) is pushed; one without is
loaded into the local engine. The local engine is asked whether the uri already exists before a
load; the registry check for pushes comes from the registry client.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import _config
from ._errors import BuildError, FlyteImagesError, RegistryError, SecretNotFoundError
from ._image import Image
from ._render import CA_SECRET_ID, Rendered, RenderOptions, render
from ._statcache import shared_stat_cache
from ._syncaio import syncaio
from ._validation import platforms as check_platforms

if TYPE_CHECKING:
    from flyte_images.builders.base import SecretSource

CA_BUNDLE_ENV = "FLYTE_IMAGES_CA_BUNDLE"
T = TypeVar("T")


class ImageBuild(str):
    """The uri of a built (or already existing) image; a `str`, with details as attributes.

    `uri` the image reference, `built` whether a build ran, `reason` why not, `digest` the
    pushed manifest digest or loaded image id when known, `dockerfile` the rendered text.
    """

    uri: str
    built: bool
    reason: str
    digest: str | None
    dockerfile: str

    def __new__(
        cls, uri: str, *, built: bool, reason: str = "", digest: str | None = None, dockerfile: str = ""
    ) -> ImageBuild:
        value = super().__new__(cls, uri)
        value.uri = uri
        value.built = built
        value.reason = reason
        value.digest = digest
        value.dockerfile = dockerfile
        return value


@dataclass(frozen=True)
class _Secrets:
    sources: tuple[SecretSource, ...]
    values: tuple[str, ...]  # only to redact them from build output


def _secret_sources(rendered: Rendered, ca_bundle: Path | None) -> _Secrets:
    from flyte_images.builders.base import SecretSource

    sources: list[SecretSource] = []
    values: list[str] = []
    for secret in rendered.secrets:
        var = secret.source_env_var
        if os.environ.get(var):
            sources.append(SecretSource(id=secret.build_id, env=var))
            values.append(os.environ[var])
        elif os.environ.get(f"{var}_FILE"):
            path = Path(os.environ[f"{var}_FILE"])
            if not path.is_file():
                raise SecretNotFoundError(f"secret {secret.key!r}: {var}_FILE names {path}, which does not exist")
            sources.append(SecretSource(id=secret.build_id, file=path))
            values.append(path.read_text(errors="replace").strip())
        else:
            raise SecretNotFoundError(
                f"secret {secret.key!r} has no value on this machine: set the environment variable {var}, "
                f"or {var}_FILE to a file holding it"
            )
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise BuildError(f"CA bundle {ca_bundle} does not exist (from ca_bundle= or {CA_BUNDLE_ENV})")
        sources.append(SecretSource(id=CA_SECRET_ID, file=ca_bundle))
    return _Secrets(tuple(sources), tuple(v for v in values if len(v) >= 4))


def local_image_exists(uri: str) -> bool:
    try:
        result = subprocess.run(["docker", "image", "inspect", uri], capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@syncaio
def build(
    image: Image,
    dry_run: bool = False,
    force: bool = False,
    wait: bool = True,
    *,
    platform: str | tuple[str, ...] | None = None,
    builder: str | None = None,
    push: bool | None = None,
    cache_from: tuple[str, ...] = (),
    cache_to: tuple[str, ...] = (),
    ca_bundle: Path | str | None = None,
    quiet: bool = False,
    require_check: bool | None = None,
) -> ImageBuild:
    """Build `image` unless it already exists; return its uri (an `ImageBuild`, a str).

    Pushes when the image has a registry, loads into the local engine otherwise (`push`
    overrides). `force` builds even if the image exists; `dry_run` renders and reports only.
    `platform` overrides the image's platforms; `builder` names a backend (default: docker);
    `cache_from`/`cache_to` are passed to BuildKit; `ca_bundle` (or FLYTE_IMAGES_CA_BUNDLE) is a
    CA file mounted as a secret into every downloading step, never into the image. When the
    registry cannot be asked, the image is built anyway with a warning, or, with
    `require_check` (the default when CI is set), a RegistryError says why. `wait` is accepted
    for compatibility: builds always complete before this returns.

    Example:
        uri = flyte_images.build(Image.from_debian_base().with_pip_packages("numpy"))
        uri = await flyte_images.build.aio(image)
    """
    del wait
    if image.is_reference:
        return ImageBuild(image.uri, built=False, reason="an existing image, used as is")
    if platform is not None:
        image = image.clone(platform=check_platforms(platform))  # type: ignore[arg-type]
    image.validate()
    uri = image.uri
    registry = image.registry or _config.configured_registry()
    pushing = bool(registry) if push is None else push
    ca_text = str(ca_bundle) if ca_bundle else _config.configured_ca_bundle()
    ca_path = Path(ca_text) if ca_text else None
    rendered = render(image, RenderOptions(ca_bundle=ca_path is not None), shared_stat_cache())
    if not force:
        strict = bool(os.environ.get("CI")) if require_check is None else require_check
        found = _already_there(uri, image.platform, pushing, strict, quiet)
        if found is not None:
            reason, digest = found
            _record(image)
            return ImageBuild(uri, built=False, reason=reason, digest=digest, dockerfile=rendered.dockerfile)
    if dry_run:
        return ImageBuild(uri, built=False, reason="dry run: would build", dockerfile=rendered.dockerfile)
    secrets = _secret_sources(rendered, ca_path)
    result = _run_backend(image, uri, rendered, secrets, pushing, builder, cache_from, cache_to, quiet)
    if pushing:
        from ._registry.record import PlatformCache, remember_push

        remember_push(uri, result.digest, image.platform)
        if result.digest and len(image.platform) == 1:  # a single-platform push is a plain manifest
            cache = PlatformCache.default()
            cache.put(result.digest, image.platform)
            cache.save()
    _record(image)
    return result


def _record(image: Image) -> None:
    """Keep what this build was made of, for `flyte-images explain` (best effort)."""
    from ._explain import breakdown, save_record

    with contextlib.suppress(OSError, FlyteImagesError):
        save_record(breakdown(image, shared_stat_cache()))


def _already_there(
    uri: str, platforms: tuple[str, ...], pushing: bool, strict: bool, quiet: bool
) -> tuple[str, str | None] | None:
    """(reason, digest) when the image need not be built; None when it must be."""
    if not pushing:
        return ("already in the local engine", None) if local_image_exists(uri) else None
    from ._registry.client import check_many
    from ._registry.record import recent_push

    existence = run_coroutine(check_many([uri], platforms, insecure=_config.insecure_registries()))[0]
    if existence.exists:
        return f"already in the registry with {', '.join(existence.platforms)}", existence.digest
    if existence.state == "missing":
        pushed = recent_push(uri, platforms)
        if pushed is not None:
            age = int(time.time() - float(str(pushed["time"])))
            return f"pushed from this machine {age} s ago (the registry has not caught up)", None
        return None
    if strict:
        raise RegistryError(
            f"cannot tell whether {uri} is already built: {existence.reason}; fix that, or pass "
            "require_check=False (CLI: --no-require-check) to build without knowing"
        )
    if not quiet:
        print(f"warning: cannot tell whether {uri} exists ({existence.reason}); building it", file=sys.stderr)
    return None


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread that already runs an event loop (a notebook)."""
    import asyncio  # here, not at import time: `import flyte_images` stays cheap
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _run_backend(
    image: Image,
    uri: str,
    rendered: Rendered,
    secrets: _Secrets,
    pushing: bool,
    builder: str | None,
    cache_from: tuple[str, ...],
    cache_to: tuple[str, ...],
    quiet: bool,
) -> ImageBuild:
    from flyte_images.builders.base import BuildRequest

    from ._builders import get_builder
    from ._context import staged_context
    from ._progress import progress_sink

    backend = get_builder(builder)
    with staged_context(rendered) as context:
        dockerfile = image.dockerfile if image.dockerfile is not None else context / "Dockerfile"
        request = BuildRequest(
            context=context,
            dockerfile=dockerfile,
            tags=(uri,),
            platforms=tuple(image.platform),
            push=pushing,
            secrets=secrets.sources,
            cache_from=tuple(cache_from),
            cache_to=tuple(cache_to),
            labels={"dev.flyte-images.identifier": image.identifier},
            redact=secrets.values,
        )
        with progress_sink(quiet, title=uri) as sink:
            result = backend.build(request, sink)
    return ImageBuild(uri, built=True, digest=result.digest, dockerfile=rendered.dockerfile)
