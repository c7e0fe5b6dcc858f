"""Which Flyte SDK the plugin and the converter are made for (2.12.x), and the errors they raise.
The converter reads flyte's internal layer classes field by field, so any other flyte is refused
(asking the installed distribution's metadata, never importing flyte) before a layer is read.
"""

from __future__ import annotations

from .._errors import ConfigError, InvalidImageError

SUPPORTED_SERIES = (2, 12)
PINNED = "2.12.1"  # what the `flyte` extra installs
_INSTALL = "pip install 'flyte-images[flyte]'"


class UnsupportedFlyteError(ConfigError):
    """flyte is not installed, or is a release the plugin was not made for."""


class FlyteConversionError(InvalidImageError):
    """A flyte.Image cannot be expressed as a flyte-images Image; the message says where and why."""


class UntranslatableLayerError(FlyteConversionError):
    """A layer of a flyte.Image that flyte-images cannot build. `kind` is flyte's class name."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def require_supported_flyte() -> str:
    """The installed flyte's version, if the plugin supports it; else UnsupportedFlyteError."""
    from importlib import metadata  # here: `import flyte_images` stays cheap

    from packaging.version import InvalidVersion, Version

    major, minor = SUPPORTED_SERIES
    try:
        installed = metadata.version("flyte")
    except metadata.PackageNotFoundError:
        raise UnsupportedFlyteError(
            f"the flyte-images plugin for the Flyte SDK needs flyte {major}.{minor}.x, and flyte is not "
            f"installed; install it with `{_INSTALL}` (flyte=={PINNED})"
        ) from None
    try:
        release = Version(installed).release
    except InvalidVersion:
        release = ()
    if release[:2] != SUPPORTED_SERIES:
        raise UnsupportedFlyteError(
            f"the flyte-images plugin supports flyte {major}.{minor}.x (>={major}.{minor}.0,<{major}.{minor + 1}), "
            f"but flyte {installed} is installed; install a supported one with `{_INSTALL}` (flyte=={PINNED}), or "
            "use flyte's own builder (image_builder='local') with this flyte"
        )
    return installed
