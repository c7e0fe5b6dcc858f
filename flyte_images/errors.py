"""The error classes of flyte-images, importable as `flyte_images.errors` like `flyte.errors`.

Code ported from the Flyte SDK keeps its `except` clauses by changing the import:

    from flyte_images.errors import ImageBuildError   # was: from flyte.errors import ImageBuildError

`ImageBuildError` is raised where the SDK raises it: a missing source file or folder, a file
given where a folder is expected (and the reverse), a build that failed. The tree of all
classes is in the docstring of `flyte_images._errors`.
"""

from ._errors import (
    BaseImageNotFoundError,
    BuildError,
    ConfigError,
    EngineUnavailableError,
    FlyteImagesError,
    ImageBuildError,
    ImageCacheError,
    InvalidArgumentType,
    InvalidBuilderError,
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
from ._imagecache import ImagesFailedError

__all__ = [
    "BaseImageNotFoundError",
    "BuildError",
    "ConfigError",
    "EngineUnavailableError",
    "FlyteImagesError",
    "ImageBuildError",
    "ImageCacheError",
    "ImagesFailedError",
    "InvalidArgumentType",
    "InvalidBuilderError",
    "InvalidImageError",
    "InvalidLayerArgument",
    "LayerNotAllowedError",
    "LoadError",
    "MissingNameError",
    "PushDeniedError",
    "RegistryError",
    "SecretNotFoundError",
    "SourceError",
    "SourceNotFoundError",
    "StepFailedError",
]
