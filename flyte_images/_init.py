"""`init(...)` and `init_from_config(...)` with the Flyte SDK's signatures.

Only the settings the image engine uses take effect: `image_builder` (a name, or a builder
object as the SDK takes one), `images`, `image_registry`, `root_dir` (whose `.dockerignore`
applies to every folder an image copies, as in the SDK; without it, the current folder's), and
for `init_from_config` the config file itself. The remote-service parameters (endpoint, auth,
storage, ...) are accepted so SDK code ports unchanged, and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _config
from ._build.backends import is_builder_object
from ._errors import ConfigError, InvalidBuilderError
from ._syncaio import syncaio


def _root_dir(value: Path | str | None) -> str | None:
    # Absolute now: a later chdir must not move the project root, as in the SDK.
    return None if value is None else str(Path(value).absolute())


def _builder(value: object) -> object:
    """The image_builder setting: a name, or an object used for every build as the SDK uses
    it (see `_builders.WholeImageBuilder` for how an SDK image builder object builds); one that
    can never build is refused here rather than at the first build."""
    if value is not None and not isinstance(value, str) and not is_builder_object(value):
        raise InvalidBuilderError(
            f"image_builder={value!r} is not an image builder: give a builder's name (e.g. 'docker', "
            "'buildkit'), one of our backends, or a Flyte SDK image builder (with build_image(...))"
        )
    # The SDK's default is "local" (its Docker builder); leave the setting to env/config then.
    return None if value in (None, "local") else value


@syncaio
def init(
    org: str | None = None,
    project: str | None = None,
    domain: str | None = None,
    root_dir: Path | None = None,
    log_level: int | None = None,
    log_format: Any = None,
    reset_root_logger: bool = False,
    user_log_level: int | None = None,
    endpoint: str | None = None,
    headless: bool = False,
    insecure: bool = False,
    insecure_skip_verify: bool = False,
    ca_cert_file_path: str | None = None,
    auth_type: Any = "Pkce",
    command: list[str] | None = None,
    proxy_command: list[str] | None = None,
    api_key: str | None = None,
    client_id: str | None = None,
    client_credentials_secret: str | None = None,
    auth_client_config: Any = None,
    rpc_retries: int = 3,
    http_proxy_url: str | None = None,
    disable_keyring: bool = False,
    storage: Any = None,
    batch_size: int = 1000,
    image_builder: str | object = "local",
    images: dict[str, str] | None = None,
    image_registry: str | None = None,
    source_config_path: Path | None = None,
    sync_local_sys_paths: bool = True,
    load_plugin_type_transformers: bool = True,
    local_persistence: bool = False,
    local_tracked: bool = False,
    local_tracked_strict: bool = False,
    scopes: list[str] | None = None,
) -> None:
    """Set the registry, builder and named images used by this process.

    Example:
        flyte_images.init(image_registry="ghcr.io/acme", images={"default": "ghcr.io/acme/base:1"})
    """
    if images is not None and not (
        isinstance(images, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in images.items())
    ):
        raise ConfigError(f"images must map names to image references, got {images!r}")
    if source_config_path is not None:
        _config.load_file(Path(source_config_path))
    _config.set_explicit(
        registry=image_registry, image_builder=_builder(image_builder), images=images, root_dir=_root_dir(root_dir)
    )


@syncaio
def init_from_config(
    path_or_config: str | Path | None = None,
    root_dir: Path | None = None,
    log_level: int | None = None,
    log_format: Any = "console",
    user_log_level: int | None = None,
    org: str | None = None,
    project: str | None = None,
    domain: str | None = None,
    storage: Any = None,
    batch_size: int = 1000,
    image_builder: str | object | None = None,
    images: tuple[str, ...] | None = None,
    sync_local_sys_paths: bool = True,
) -> None:
    """Read settings from a TOML config file (see `flyte_images._config` for the format and
    where it is looked for); `images` are extra "name=reference" pairs (a bare reference names the "default" image).

    Example:
        flyte_images.init_from_config("flyte-images.toml", images=("gpu=ghcr.io/acme/gpu:3",))
    """
    if path_or_config is not None:
        _config.load_file(Path(path_or_config))
    else:
        found = _config.find_config_file()
        if found is not None:
            _config.load_file(found)
    pairs: dict[str, str] = {}
    for item in images or ():
        name, sep, ref = item.partition("=")
        if not sep:  # a bare uri is the "default" image, as the Flyte SDK takes it
            name, ref = "default", item
        if not name.strip() or not ref.strip():
            raise ConfigError(
                f"image reference {item!r} is not of the form name=registry/repo:tag or registry/repo:tag"
            )
        pairs[name.strip()] = ref.strip()
    _config.set_explicit(image_builder=_builder(image_builder), images=pairs or None, root_dir=_root_dir(root_dir))
