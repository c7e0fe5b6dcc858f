"""flyte-images: the image-build engine of the Flyte 2 SDK, as a library and a CLI.

    from flyte_images import Image
    image = Image.from_debian_base(python_version=(3, 12)).with_pip_packages("numpy")
    print(image.uri)

Everything importable from here is public; modules starting with `_` are internal. The
path of an image through the package, in the order data flows:

    _image, _layers/   the model: an Image is a base and a chain of frozen layer values
    _plan              one BuildPlan per image (identifier, Dockerfile, manifest), from one read
                       of its files (_sources, _files, _ignore, _identity, _render)
    _stage             the staged context: the snapshot the identifier was computed from
    _skip              one rule: is the image already there?
    builders/          backends (docker, ...) behind one protocol, found by entry point
    _registry/         existence checks that never guess, push records
    _build, _deploy    build() and build_images(): the steps above, for one image or many
    _cli/              the flyte-images command
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
    ImageBuildError,
    ImageCacheError,
    ImagesFailedError,
    InvalidArgumentType,
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
from ._flyte import from_flyte
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
    "ImageBuildError",
    "ImageCache",
    "ImageCacheError",
    "ImagesFailedError",
    "InvalidArgumentType",
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
    "from_flyte",
    "init",
    "init_from_config",
    "version",
]


def version() -> str:
    """The version of flyte-images."""
    return __version__
