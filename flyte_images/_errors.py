"""The exception tree of flyte-images, in one place.

    FlyteImagesError
    ├── InvalidImageError (also a ValueError)   bad arguments, caught at the call
    │   ├── InvalidLayerArgument                 one parameter of one layer is wrong
    │   │   └── InvalidArgumentType (also a TypeError)  e.g. a list where strings are passed
    │   ├── LayerNotAllowedError                 e.g. a layer on a Dockerfile-based image
    │   └── MissingNameError (also an ImageBuildError)  a built image needs a name for its uri
    ├── ImageBuildError (also a RuntimeError)    what the Flyte SDK raises as ImageBuildError:
    │   ├── SourceError                          files an image reads are missing or unusable
    │   │   └── SourceNotFoundError (also FileNotFoundError)
    │   └── BuildError (below)
    ├── ConfigError                              no registry, unknown image ref, bad config file
    │   └── InvalidBuilderError (also a ValueError)  no image builder of that name, or not one
    ├── RegistryError                            a registry could not be asked (never "exists")
    ├── BuildError (an ImageBuildError)          a build could not be prepared or failed
    │   ├── EngineUnavailableError               no Docker CLI, no daemon, no buildx
    │   │   └── BuilderTLSError                  a remote buildkitd refused TLS (CA, client cert)
    │   ├── BaseImageNotFoundError               FROM image neither local nor pullable
    │   ├── SecretNotFoundError                  a build secret has no value to mount
    │   ├── StepFailedError                      a RUN step failed (step, exit code, last lines)
    │   │   └── PlatformNotSupportedError        the builder cannot run programs of a platform
    │   ├── EmulationUnavailableError            no emulator for a foreign platform's RUN steps
    │   ├── PushFailedError                      built, but the push failed
    │   │   └── PushDeniedError                  the registry refused the push
    │   ├── PartialPushError                     every platform pushed, but not the index
    │   └── ImagesFailedError                    some images of build_images failed (.cache has all;
    │                                            defined beside ImageCache, in `_imagecache`)
    ├── LoadError                                a Python file given to the CLI cannot be loaded
    └── ImageCacheError (also a ValueError)      an ImageCache JSON or transport string is malformed

Every message names the bad value and says what to do. No message ever carries a secret value:
secrets are referred to by their key only.
"""

from __future__ import annotations

from collections.abc import Mapping


class FlyteImagesError(Exception):
    """Root of every error raised on purpose by flyte-images."""


class ImageBuildError(FlyteImagesError, RuntimeError):
    """What `flyte.errors.ImageBuildError` stands for: an image cannot be built as described (a
    source is missing or of the wrong kind, the build failed). Code ported from the Flyte SDK
    that catches `ImageBuildError` catches these (`flyte_images.errors.ImageBuildError`)."""


class InvalidImageError(FlyteImagesError, ValueError):
    """An Image was described with arguments that can never be right."""


class InvalidLayerArgument(InvalidImageError):
    """One parameter of one layer is invalid; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class InvalidArgumentType(InvalidLayerArgument, TypeError):
    """A parameter got a value of the wrong type (a list where strings are passed one by one);
    a TypeError, as the Flyte SDK raises for it, and still an InvalidLayerArgument."""


class LayerNotAllowedError(InvalidImageError):
    """A layer was added where none can be (for example to a Dockerfile-based image)."""


class MissingNameError(InvalidImageError, ImageBuildError):
    """The image is built by us, so its uri needs a repository name, and none is known."""


class SourceError(ImageBuildError):
    """A file or folder an image reads is missing, unreadable or of the wrong kind."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A file or folder an image layer needs does not exist."""


class ConfigError(FlyteImagesError):
    """Configuration is missing or wrong: no registry, an unknown image ref, a bad config file."""


class InvalidBuilderError(ConfigError, ValueError):
    """The image builder named is not installed, or the object given is not a builder; a
    ValueError, as the Flyte SDK raises for an unknown builder name, and still a ConfigError."""


class RegistryError(FlyteImagesError):
    """A registry could not answer whether an image exists: unreachable, 5xx, or no credentials."""


class BuildError(ImageBuildError):
    """A build could not be prepared (e.g. staging, fetching uv) or the builder failed."""


class EngineUnavailableError(BuildError):
    """The build engine cannot be used: no Docker CLI, no daemon, or no buildx plugin."""


class BaseImageNotFoundError(BuildError):
    """The base image is not in the local engine and cannot be pulled."""


class SecretNotFoundError(BuildError):
    """A secret a layer mounts has no value on this machine (named by key, never by value)."""


class StepFailedError(BuildError):
    """A build step failed; carries the step, its exit code and the last lines of its output."""

    def __init__(self, message: str, step: str = "", exit_code: int | None = None, tail: str = "") -> None:
        self.step = step
        self.exit_code = exit_code
        self.tail = tail
        super().__init__(message)


class PushFailedError(BuildError):
    """The image was built but could not be pushed (registry down, network); building again
    reuses BuildKit's cache and only pushes."""


class PushDeniedError(PushFailedError):
    """The registry refused the push (not logged in, or no permission)."""


class BuilderTLSError(EngineUnavailableError):
    """A remote build daemon was reached but the TLS handshake failed: its certificate is not
    trusted by the given CA, its name does not match, or it refused the client certificate."""


class PlatformNotSupportedError(StepFailedError):
    """A step could not start its program for a requested platform (exec format error): the
    builder has neither a native node nor an emulator (QEMU through binfmt_misc) for it."""


class EmulationUnavailableError(BuildError):
    """A foreign platform's RUN steps cannot execute: the engine's kernel has no emulator for it."""


class PartialPushError(BuildError):
    """Every platform was pushed, but the index that makes them one image could not be written.

    `pushed` maps each platform to the reference it was pushed as. The tag does not exist until
    the index does: the next build sees it missing and completes it."""

    def __init__(self, message: str, pushed: Mapping[str, str]) -> None:
        self.pushed = dict(pushed)
        super().__init__(message)


class LoadError(FlyteImagesError):
    """A Python file or module named on the command line could not be loaded."""


class ImageCacheError(FlyteImagesError, ValueError):
    """An ImageCache JSON or transport string is malformed, truncated, or too large to accept."""
