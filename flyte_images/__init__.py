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
    _build/            build() and build_images(): route, skip rule, engine and append routes
    builders/          backends (docker, ...) behind one protocol, found by entry point
    _registry/         one Registry: checks that never guess, reads, pushes; push records
    _append/           the file part of an image, appended in a registry without an engine
    _cli/              the flyte-images command
"""

from ._version import __version__

# Not `typing.TYPE_CHECKING`: importing typing costs every command ~5 ms before it starts.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ._build import ImageBuild, build
    from ._build.deploy import build_images
    from ._errors import (
        BaseImageNotFoundError,
        BuildError,
        BuilderTLSError,
        ConfigError,
        EmulationUnavailableError,
        EngineUnavailableError,
        FlyteImagesError,
        ImageBuildError,
        ImageCacheError,
        InvalidArgumentType,
        InvalidImageError,
        InvalidLayerArgument,
        LayerNotAllowedError,
        LoadError,
        MissingNameError,
        PartialPushError,
        PlatformNotSupportedError,
        PushDeniedError,
        PushFailedError,
        RegistryError,
        SecretNotFoundError,
        SourceError,
        SourceNotFoundError,
        StepFailedError,
    )
    from ._flyte import from_flyte
    from ._formats.validation import Architecture
    from ._image.environment import Environment, TaskEnvironment
    from ._image.image import Image
    from ._image.policies import Cache, Cron, FixedRate, PodTemplate, RetryStrategy, ReusePolicy, Timeout, Trigger
    from ._image.resources import AMD_GPU, GPU, HABANA_GAUDI, TPU, Device, Neuron, Resources
    from ._image.secret import Secret, SecretRequest
    from ._imagecache import ImageCache, ImagesFailedError
    from ._init import init, init_from_config

# Names are imported when first used (PEP 562): `import flyte_images` stays cheap, and a
# program that only builds never loads the environment model, and the other way round.
_LAZY = {
    "AMD_GPU": "._image.resources",
    "Architecture": "._formats.validation",
    "BaseImageNotFoundError": "._errors",
    "BuildError": "._errors",
    "PlatformNotSupportedError": "._errors",
    "PartialPushError": "._errors",
    "EmulationUnavailableError": "._errors",
    "BuilderTLSError": "._errors",
    "Cache": "._image.policies",
    "ConfigError": "._errors",
    "Cron": "._image.policies",
    "Device": "._image.resources",
    "EngineUnavailableError": "._errors",
    "Environment": "._image.environment",
    "FixedRate": "._image.policies",
    "FlyteImagesError": "._errors",
    "GPU": "._image.resources",
    "HABANA_GAUDI": "._image.resources",
    "Image": "._image.image",
    "ImageBuild": "._build",
    "ImageBuildError": "._errors",
    "ImageCache": "._imagecache",
    "ImageCacheError": "._errors",
    "ImagesFailedError": "._imagecache",
    "InvalidArgumentType": "._errors",
    "InvalidImageError": "._errors",
    "InvalidLayerArgument": "._errors",
    "LayerNotAllowedError": "._errors",
    "LoadError": "._errors",
    "MissingNameError": "._errors",
    "Neuron": "._image.resources",
    "PodTemplate": "._image.policies",
    "PushDeniedError": "._errors",
    "PushFailedError": "._errors",
    "RegistryError": "._errors",
    "Resources": "._image.resources",
    "RetryStrategy": "._image.policies",
    "ReusePolicy": "._image.policies",
    "Secret": "._image.secret",
    "SecretNotFoundError": "._errors",
    "SecretRequest": "._image.secret",
    "SourceError": "._errors",
    "SourceNotFoundError": "._errors",
    "StepFailedError": "._errors",
    "TPU": "._image.resources",
    "TaskEnvironment": "._image.environment",
    "Timeout": "._image.policies",
    "Trigger": "._image.policies",
    "build": "._build",
    "build_images": "._build.deploy",
    "from_flyte": "._flyte",
    "init": "._init",
    "init_from_config": "._init",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:  # e.g. `from . import _cli` asks before importing: no import here
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ._lazy import attribute

    return attribute(__name__, _LAZY, name, globals())


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AMD_GPU",
    "GPU",
    "HABANA_GAUDI",
    "TPU",
    "Architecture",
    "BaseImageNotFoundError",
    "BuildError",
    "PlatformNotSupportedError",
    "PartialPushError",
    "EmulationUnavailableError",
    "BuilderTLSError",
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
    "PushFailedError",
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
