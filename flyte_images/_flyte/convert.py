"""`from_flyte(image)`: a `flyte.Image` of the Flyte SDK (2.12.x) as a flyte-images `Image`.

flyte's constructor and `with_*` calls are replayed on our `Image` (same names and arguments),
so our renderer alone decides what they build. Every layer kind of flyte 2.12 is translated or
refused with an `UntranslatableLayerError` naming it, its position and the alternative; nothing
is dropped silently. The constructor is recognised from what flyte stored: `from_dockerfile` as
such; an unmodified image (flyte never builds one) as a reference to it; flyte's published
default image `ghcr.io/flyteorg/flyte:pyX.Y-vV` as our `from_debian_base` with that Python and
flyte (layers after it build FROM it as root, ending with `USER flyte`); flyte's default-image
recipe as the first layers as our `from_debian_base(install_flyte=False)`, which builds that
layout itself; any other base as `from_base(uri).clone(...)`, running as its base's user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InvalidImageError, SourceError
from .._formats import validation as check
from .._formats.validation import Architecture
from .._image import args
from .._image.image import Image
from .._image.layers import CodeBundle, DebianBase, PythonWheels
from .._image.secret import Secret
from ._compat import FlyteConversionError, UntranslatableLayerError, require_supported_flyte

if TYPE_CHECKING:
    import flyte
    from flyte import _image as fl

# flyte's tag of its published default image, `py{major}.{minor}-v{version}`; the version is the
# rest of a tag (Docker's tag characters), so a reference pinned by digest is not recognised.
_PUBLISHED = re.compile(
    re.escape(args.PUBLISHED_REPOSITORY) + r":py(?P<major>\d+)\.(?P<minor>\d+)-v(?P<version>\w[\w.-]*)"
)
_OTHER_BUILDER = "or build this image with flyte's own builder (image_builder='local')"


class _Refused(Exception):
    """Raised by a layer translation; becomes an UntranslatableLayerError naming the layer."""


def from_flyte(image: flyte.Image) -> Image:
    """The flyte-images Image that builds what `image` (a `flyte.Image`) describes; needs flyte
    2.12.x. Raises UntranslatableLayerError (an InvalidImageError) naming any layer it cannot build.

    Example: `from_flyte(flyte.Image.from_debian_base(install_flyte=False).with_pip_packages("numpy"))`
    """
    require_supported_flyte()
    import flyte

    if not isinstance(image, flyte.Image):
        raise FlyteConversionError(
            f"from_flyte expects a flyte.Image, got {type(image).__name__} {image!r:.80}; for a flyte-images "
            "Image there is nothing to convert"
        )
    if image.dockerfile is not None:
        return _from_dockerfile(image)
    if not image._is_cloned:
        # flyte's own rule: an unmodified image is an existing one, never built. The published
        # default image stays our from_debian_base() (not a bare from_base), so that layers added
        # to the result build FROM it as root and end as `flyte`, as on any of ours.
        uri = _base_uri(image)
        return _published(uri, tuple(image.platform)) or Image.from_base(uri)
    ours, layers = _base(image)
    for position, layer in layers:
        ours = _translate(ours, layer, f"layer {position} of the flyte image {image.name!r}")
    secret = image._image_registry_secret
    return ours.clone(registry_secret=_secret(secret)) if secret is not None else ours


def _from_dockerfile(image: flyte.Image) -> Image:
    if image._layers:
        raise FlyteConversionError(
            f"the flyte image {image.name!r} is built from {image.dockerfile} and also has layers; put those steps "
            "into the Dockerfile"
        )
    assert image.dockerfile is not None
    return Image.from_dockerfile(
        image.dockerfile, registry=image.registry or "", name=str(image.name), platform=tuple(image.platform)
    )


def _base_uri(image: flyte.Image) -> str:
    """The base image reference; for `from_ref_name`, resolved as flyte does when deploying
    (`flyte.init(images=...)` / the config's image_refs), else through our own settings."""
    if image.base_image:
        return image.base_image
    if image._ref_name is None:
        raise FlyteConversionError("the flyte image has neither a base image nor a Dockerfile; start from Image.from_*")
    from flyte._initialize import _get_init_config

    from .._config import resolve_ref

    config = _get_init_config()
    found = config.images.get(image._ref_name) if config is not None else None
    return found or resolve_ref(image._ref_name)


def _published(uri: str, platform: tuple[Architecture, ...]) -> Image | None:
    """Our `from_debian_base()` referring to flyte's published default image `uri`, or None
    when `uri` is another image."""
    match = _PUBLISHED.fullmatch(uri)
    if match is None:
        return None
    python = (int(match["major"]), int(match["minor"]))
    version = match["version"]
    released = version if args.is_released(version) else None
    ours = Image.from_debian_base(python_version=python, flyte_version=released, platform=platform)
    if ours.base_image != uri:
        # A pre-release: our from_debian_base would build python + flyte==V from the index, but
        # the flyte image is FROM flyte's published image of it, so ours is too: the same
        # published-image layer, naming that version.
        layer = DebianBase(install_flyte=True, flyte_version=version, published=True)
        ours = ours._replace(base_image=uri, _layers=(layer,))  # a reference: _PUBLISHED matched it
    return ours


def _base(image: flyte.Image) -> tuple[Image, list[tuple[int, fl.Layer]]]:
    """Our image from flyte's constructor, and the layers added after it (numbered from 1)."""
    layers = list(enumerate(image._layers, start=1))
    base = _base_uri(image)
    platform = tuple(image.platform)
    # On its published image flyte puts no layers of its own: every layer is the user's.
    ours = _published(base, platform)
    if ours is None:
        version = check.python_version(tuple(image.python_version))
        recipe = _default_recipe(version)
        if tuple(image._layers[: len(recipe)]) == recipe:
            # flyte's default-image recipe is what our from_debian_base(install_flyte=False)
            # builds: its layers become that one base layer, never a second copy of the layout.
            ours = Image.from_debian_base(python_version=version, install_flyte=False, platform=platform)
            if base != f"python:{version[0]}.{version[1]}-slim-bookworm":
                # The recipe on a base of the user's (`clone(base_image=...)`): ours on that base.
                # On flyte's own base, our configured base image (a mirror of it) is kept.
                ours = ours.clone(base_image=base)
            layers = layers[len(recipe) :]
        else:
            ours = Image.from_base(base).clone(platform=platform)
    # Cloned, as flyte's image is: an image of its own, built (FROM the published one, for that).
    return ours.clone(registry=image.registry or None, name=image.name, extendable=image.extendable), layers


@cache
def _default_recipe(python: tuple[int, int]) -> tuple[fl.Layer, ...]:
    """The layers flyte puts on python:X.Y-slim-bookworm for `from_debian_base(install_flyte=False)`
    (the same for every Python), taken from flyte itself: a change in a later flyte is a mismatch
    here (its layers are then translated one by one, and its raw label lines refused), never a
    stale copy."""
    import flyte

    return tuple(flyte.Image._get_default_image_for(python_version=python, install_flyte=False)._layers)


def _translate(ours: Image, layer: fl.Layer, where: str) -> Image:
    kind = type(layer).__name__
    translate = _translators().get(type(layer))  # the exact type: a subclass is another kind
    if translate is None:
        raise UntranslatableLayerError(
            kind,
            f"{where} is a {kind}, a layer kind flyte-images does not know (it translates the kinds of flyte "
            f"2.12); remove it, {_OTHER_BUILDER}",
        )
    try:
        return translate(ours, layer)
    except _Refused as exc:
        raise UntranslatableLayerError(kind, f"{where} ({kind}): {exc}") from None
    except InvalidImageError as exc:
        raise FlyteConversionError(f"{where} ({kind}): {exc}") from exc


def _secret(item: str | flyte.Secret) -> Secret:
    if isinstance(item, str):
        return Secret(key=item)
    mount = Path(item.mount) if item.mount is not None else None
    return Secret(key=item.key, group=item.group, mount=mount, as_env_var=item.as_env_var)


def _secrets(items: tuple[str | flyte.Secret, ...] | None) -> tuple[Secret, ...]:
    return tuple(_secret(item) for item in items or ())


def _pip_options(layer: fl.PipOption) -> dict[str, Any]:
    return {
        "index_url": layer.index_url,
        "extra_index_urls": layer.extra_index_urls,
        "pre": layer.pre,
        "extra_args": layer.extra_args,
        "secret_mounts": _secrets(layer.secret_mounts),
    }


# ----- the layer kinds ----------------------------------------------------------------------
# A layer made without a with_* method of ours is added with `_with_layer`, not
# `clone(addl_layer=...)`: flyte already applied its `extendable` rule when the layer was added.


def _wheels(ours: Image, layer: fl.PythonWheels) -> Image:
    options = [name for name, value in _pip_options(layer).items() if value]
    if options:
        raise _Refused(
            f"installing wheels with {', '.join(options)} is not supported by flyte-images; install the wheel "
            f"folder without them, {_OTHER_BUILDER}"
        )
    # Our with_local_v2 is this layer for ./dist only; flyte also makes it for other folders and packages.
    wheels = PythonWheels(wheel_dir=check.local_path("wheel_dir", layer.wheel_dir), package_name=layer.package_name)
    return ours._with_layer(wheels)


def _uv_script(ours: Image, layer: fl.UVScript) -> Image:
    from .._image.uvscript import parse_script_metadata

    try:
        metadata = parse_script_metadata(Path(layer.script).read_text(encoding="utf-8"), str(layer.script))
        local = [dep for dep in metadata.dependencies if "file://" in dep]
    except (OSError, SourceError):
        local = []  # the build reports a missing or malformed script, naming it
    if local:
        raise _Refused(
            f"{layer.script} depends on local projects by file:// URL ({', '.join(local)}), which flyte-images "
            "cannot install from a script; add them with with_uv_project(..., project_install_mode='install_project')"
        )
    # Our Image makes this layer only in from_uv_script: take it from there, with that method's checks.
    made = Image.from_uv_script(layer.script, name=ours.name or "script", **_pip_options(layer))
    return ours._with_layer(made._layers[-1])


def _pixi_script(ours: Image, layer: fl.PixiScript) -> Image:
    # As for uv scripts; the conda platforms come from the image's platforms, as flyte's do.
    made = Image.from_pixi_script(
        layer.script,
        name=ours.name or "script",
        environment=layer.environment,
        extra_args=layer.extra_args,
        platform=ours.platform,
        secret_mounts=_secrets(layer.secret_mounts),
    )
    return ours._with_layer(made._layers[-1])


def _copy(ours: Image, layer: fl.CopyConfig) -> Image:
    if layer.path_type == 1:
        # flyte stores where the folder's contents go (with_source_folder already turned the
        # default "." into "./<name>"): that is our copy_contents_only.
        return ours.with_source_folder(layer.src, dst=layer.dst, copy_contents_only=True)
    return ours.with_source_file(layer.src, dst=layer.dst)


def _code_bundle(ours: Image, layer: fl.CodeBundleLayer) -> Image:
    bundled = ours.with_code_bundle(layer.copy_style, dst=layer.dst)
    if layer.root_dir is None:  # not resolved by a deploy: nothing is copied, by flyte or here
        return bundled
    made = bundled._layers[-1]
    assert isinstance(made, CodeBundle)
    return ours._with_layer(replace(made, root_dir=Path(layer.root_dir)))


def _docker_lines(ours: Image, layer: fl._DockerLines) -> Image:
    shown = layer.lines[0][:60] if layer.lines else ""
    # flyte makes these only for the labels of its default-image recipe, which is recognised
    # whole, as the first layers (our from_debian_base(install_flyte=False)); alone they are not.
    raise _Refused(
        f"raw Dockerfile lines ({shown!r}, ...) are flyte-internal and cannot be translated (flyte's default-image "
        "recipe is recognised only whole, as the first layers); express them with "
        f"with_commands/with_env_vars/with_workdir, use from_dockerfile, {_OTHER_BUILDER}"
    )


def _env(ours: Image, layer: fl.Env) -> Image:
    if not layer.env_vars:
        return ours  # flyte renders an empty Env as nothing at all
    expanding = [(key, value) for key, value in layer.env_vars if "$" in value]
    if expanding:
        key, value = expanding[0]
        raise _Refused(
            f"{key}={value!r} refers to another variable, which flyte's builder expands at build time while "
            "flyte-images sets values literally (the tag must not depend on the base image's environment); "
            "write the whole value out instead"
        )
    return ours.with_env_vars(dict(layer.env_vars))


@cache
def _translators() -> dict[type, Callable[[Image, Any], Image]]:
    """flyte's layer class -> its translation; the layers a with_* method of ours makes are that call."""
    from flyte import _image as fl

    return {
        fl.PipPackages: lambda ours, layer: ours.with_pip_packages(*(layer.packages or ()), **_pip_options(layer)),
        # `packages` is inherited from PipPackages and never set by with_requirements; flyte's
        # builder installs only the file, and so does this.
        fl.Requirements: lambda ours, layer: ours.with_requirements(layer.file, **_pip_options(layer)),
        fl.PythonWheels: _wheels,
        fl.UVProject: lambda ours, layer: ours.with_uv_project(
            layer.pyproject, uvlock=layer.uvlock, project_install_mode=layer.project_install_mode, **_pip_options(layer)
        ),
        fl.PoetryProject: lambda ours, layer: ours.with_poetry_project(
            layer.pyproject,
            poetry_lock=layer.poetry_lock,
            extra_args=layer.extra_args,
            secret_mounts=_secrets(layer.secret_mounts),
            project_install_mode=layer.project_install_mode,
        ),
        fl.PixiProject: lambda ours, layer: ours.with_pixi_project(
            layer.manifest,
            pixi_lock=layer.pixi_lock,
            environment=layer.environment,
            extra_args=layer.extra_args,
            secret_mounts=_secrets(layer.secret_mounts),
            project_install_mode=layer.project_install_mode,
        ),
        fl.UVScript: _uv_script,
        fl.PixiScript: _pixi_script,
        fl.AptPackages: lambda ours, layer: ours.with_apt_packages(
            *layer.packages, secret_mounts=_secrets(layer.secret_mounts)
        ),
        fl.Commands: lambda ours, layer: ours.with_commands(
            list(layer.commands), secret_mounts=_secrets(layer.secret_mounts)
        ),
        fl.WorkDir: lambda ours, layer: ours.with_workdir(layer.workdir),
        fl.DockerIgnore: lambda ours, layer: ours.with_dockerignore(Path(layer.path)),
        fl.CopyConfig: _copy,
        fl.CodeBundleLayer: _code_bundle,
        fl._DockerLines: _docker_lines,
        fl.Env: _env,
    }
