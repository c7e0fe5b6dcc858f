"""flyte-images: the image-build engine of the Flyte 2 SDK, as a library and a CLI.

    from flyte_images import Image
    image = Image.from_debian_base(python_version=(3, 12)).with_pip_packages("numpy")
    print(image.uri)

Everything importable from here is public; modules starting with `_` are internal.
"""

from ._build import ImageBuild, build
from ._deploy import build_images
from ._environment import Environment, TaskEnvironment
from ._errors import (
    BaseImageNotFoundError,
    BuildError,
    ConfigError,
    EngineUnavailableError,
    FlyteImagesError,
    ImageCacheError,
    ImagesFailedError,
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
from ._imagecache import ImageCache
from ._init import init, init_from_config
from ._policies import Cache, Cron, FixedRate, PodTemplate, RetryStrategy, ReusePolicy, Timeout, Trigger
from ._resources import AMD_GPU, GPU, HABANA_GAUDI, TPU, Device, Neuron, Resources
from ._secret import Secret, SecretRequest
from ._validation import Architecture
from ._version import __version__

__all__ = [
    "AMD_GPU",
    "GPU",
    "HABANA_GAUDI",
    "TPU",
    "Architecture",
    "BaseImageNotFoundError",
    "BuildError",
    "Cache",
    "ConfigError",
    "Cron",
    "Device",
    "EngineUnavailableError",
    "Environment",
    "FixedRate",
    "FlyteImagesError",
    "Image",
    "ImageBuild",
    "ImageCache",
    "ImageCacheError",
    "ImagesFailedError",
    "InvalidImageError",
    "InvalidLayerArgument",
    "LayerNotAllowedError",
    "LoadError",
    "MissingNameError",
    "Neuron",
    "PodTemplate",
    "PushDeniedError",
    "RegistryError",
    "Resources",
    "RetryStrategy",
    "ReusePolicy",
    "Secret",
    "SecretNotFoundError",
    "SecretRequest",
    "SourceError",
    "SourceNotFoundError",
    "StepFailedError",
    "TaskEnvironment",
    "Timeout",
    "Trigger",
    "__version__",
    "build",
    "build_images",
    "init",
    "init_from_config",
    "version",
]


def version() -> str:
    """The version of flyte-images."""
    return __version__
