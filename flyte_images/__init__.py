"""flyte-images: the image-build engine of the Flyte 2 SDK, as a library and a CLI.

    from flyte_images import Image
    image = Image.from_debian_base(python_version=(3, 12)).with_pip_packages("numpy")
    print(image.uri)

Everything importable from here is public; modules starting with `_` are internal.
"""

from ._build import ImageBuild, build
from ._errors import (
    BaseImageNotFoundError,
    BuildError,
    ConfigError,
    EngineUnavailableError,
    FlyteImagesError,
    InvalidImageError,
    InvalidLayerArgument,
    LayerNotAllowedError,
    LoadError,
    MissingNameError,
    PushDeniedError,
    RegistryError,
    SecretNotFoundError,
    SourceError,
    SourceNotFoundError,
    StepFailedError,
)
from ._image import Image
from ._init import init, init_from_config
from ._secret import Secret, SecretRequest
from ._validation import Architecture
from ._version import __version__

__all__ = [
    "Architecture",
    "BaseImageNotFoundError",
    "BuildError",
    "ConfigError",
    "EngineUnavailableError",
    "FlyteImagesError",
    "Image",
    "ImageBuild",
    "InvalidImageError",
    "InvalidLayerArgument",
    "LayerNotAllowedError",
    "LoadError",
    "MissingNameError",
    "PushDeniedError",
    "RegistryError",
    "Secret",
    "SecretNotFoundError",
    "SecretRequest",
    "SourceError",
    "SourceNotFoundError",
    "StepFailedError",
    "__version__",
    "build",
    "init",
    "init_from_config",
    "version",
]


def version() -> str:
    """The version of flyte-images."""
    return __version__
