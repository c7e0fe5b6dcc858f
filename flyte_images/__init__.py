"""flyte-images: the image-build engine of the Flyte 2 SDK, as a library and a CLI.

    from flyte_images import Image
    image = Image.from_debian_base(python_version=(3, 12)).with_pip_packages("numpy")
    print(image.uri)

Everything importable from here is public; modules starting with `_` are internal.
"""

from ._errors import (
    ConfigError,
    FlyteImagesError,
    InvalidImageError,
    InvalidLayerArgument,
    LayerNotAllowedError,
    LoadError,
    MissingNameError,
    SourceError,
    SourceNotFoundError,
)
from ._image import Image
from ._secret import Secret, SecretRequest
from ._validation import Architecture
from ._version import __version__

__all__ = [
    "Architecture",
    "ConfigError",
    "FlyteImagesError",
    "Image",
    "InvalidImageError",
    "InvalidLayerArgument",
    "LayerNotAllowedError",
    "LoadError",
    "MissingNameError",
    "Secret",
    "SecretRequest",
    "SourceError",
    "SourceNotFoundError",
    "__version__",
    "version",
]


def version() -> str:
    """The version of flyte-images."""
    return __version__
