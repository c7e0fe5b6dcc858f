"""The defaults `Image`'s constructors fill in (base images, the published Flyte image) and the
normalising of options its methods share."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .. import _config
from .._errors import InvalidLayerArgument
from .._formats import validation as check
from .layers.code import COPY_STYLES, CopyStyle
from .secret import Secret, SecretRequest, normalize_secrets

if TYPE_CHECKING:
    from .layers.python import ProjectInstallMode

DEFAULT_IMAGE_NAME = "flyte"
DEFAULT_FLYTE_VERSION = "2.12.1"
DEFAULT_PLATFORMS: tuple[str, ...] = ("linux/amd64",)
# Where the Flyte SDK publishes its default images, one per Python and flyte release:
# ghcr.io/flyteorg/flyte:py3.12-v2.12.1 (flyte's `_BASE_REGISTRY/_DEFAULT_IMAGE_NAME`).
PUBLISHED_REPOSITORY = "ghcr.io/flyteorg/flyte"
_INSTALL_MODES = ("dependencies_only", "install_project")
_RELEASE = re.compile(r"v?[0-9]+(?:\.[0-9]+)*")


def default_base_image(python_version: tuple[int, int]) -> str:
    """The base of a built `from_debian_base`: the configured `base_image` (FLYTE_IMAGES_BASE_IMAGE
    or the config file; `{python_version}` is filled in), or the official slim bookworm image."""
    template = _config.base_image_template()
    filled = template.replace("{python_version}", f"{python_version[0]}.{python_version[1]}")
    return check.image_reference("base_image (FLYTE_IMAGES_BASE_IMAGE or the config file)", filled)


def is_released(flyte_version: str) -> bool:
    """Whether the SDK publishes a default image of this flyte: 2.12.1 or v2.12.1, not 2.13.0b1."""
    return _RELEASE.fullmatch(flyte_version) is not None


def published_image(python_version: tuple[int, int], flyte_version: str) -> str:
    """The SDK's published default image of this Python and flyte release (`py3.12-v2.12.1`)."""
    suffix = flyte_version if flyte_version.startswith("v") else f"v{flyte_version}"
    return f"{PUBLISHED_REPOSITORY}:py{python_version[0]}.{python_version[1]}-{suffix}"


def optional_text(parameter: str, value: str | None) -> str | None:
    return None if value is None else check.nonempty(parameter, value).strip()


def optional_registry(value: str | None) -> str | None:
    return check.registry("registry", value) if value else None


def registry_secret(value: str | Secret | None) -> Secret | None:
    return None if value is None else normalize_secrets(value)[0]


def _one_of(parameter: str, value: object, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise InvalidLayerArgument(parameter, f"{value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def install_mode(value: object) -> ProjectInstallMode:
    return _one_of("project_install_mode", value, _INSTALL_MODES)  # type: ignore[no-any-return]


def copy_style(value: object) -> CopyStyle:
    return _one_of("copy_style", value, COPY_STYLES)  # type: ignore[no-any-return]


def install_options(
    index_url: str | None,
    extra_index_urls: object,
    pre: bool,
    extra_args: str | None,
    secret_mounts: SecretRequest | None,
) -> dict[str, Any]:
    return {
        "index_url": None if index_url is None else check.url("index_url", index_url),
        "extra_index_urls": check.urls("extra_index_urls", extra_index_urls),
        "pre": bool(pre),
        "extra_args": optional_text("extra_args", extra_args),
        "secret_mounts": normalize_secrets(secret_mounts),
    }


def pip_packages(packages: tuple[object, ...]) -> tuple[str, ...]:
    """Requirement strings, sorted and unique. A tuple among them is taken item by item (the
    SDK stores what it is given and accepts `with_pip_packages(("a", "b"))`); a list is a
    TypeError with the fix, as in the SDK."""
    flat: list[object] = []
    for item in packages:
        flat.extend(item if isinstance(item, tuple) else (item,))
    names = tuple(sorted({check.pip_requirement(p) for p in flat}))
    if not names:
        raise InvalidLayerArgument("packages", "name at least one package")
    return names
