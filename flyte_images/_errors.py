"""The exception tree of flyte-images, in one place.

    FlyteImagesError
    ├── InvalidImageError (also a ValueError)   bad arguments, caught at the call
    │   ├── InvalidLayerArgument                 one parameter of one layer is wrong
    │   ├── LayerNotAllowedError                 e.g. a layer on a Dockerfile-based image
    │   └── MissingNameError                     a built image needs a name for its uri
    ├── SourceError                              files an image reads are missing or unusable
    │   └── SourceNotFoundError (also FileNotFoundError)
    ├── ConfigError                              no registry, unknown image ref, bad config file
    ├── BuildError                               a build could not be prepared or failed
    └── LoadError                                a Python file given to the CLI cannot be loaded

Every message names the bad value and says what to do. No message ever carries a secret value:
secrets are referred to by their key only.
"""

from __future__ import annotations


class FlyteImagesError(Exception):
    """Root of every error raised on purpose by flyte-images."""


class InvalidImageError(FlyteImagesError, ValueError):
    """An Image was described with arguments that can never be right."""


class InvalidLayerArgument(InvalidImageError):
    """One parameter of one layer is invalid; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class LayerNotAllowedError(InvalidImageError):
    """A layer was added where none can be (for example to a Dockerfile-based image)."""


class MissingNameError(InvalidImageError):
    """The image is built by us, so its uri needs a repository name, and none is known."""


class SourceError(FlyteImagesError):
    """A file or folder an image reads is missing, unreadable or of the wrong kind."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A file or folder an image layer needs does not exist."""


class ConfigError(FlyteImagesError):
    """Configuration is missing or wrong: no registry, an unknown image ref, a bad config file."""


class BuildError(FlyteImagesError):
    """A build could not be prepared (e.g. staging, fetching uv) or the builder failed."""


class LoadError(FlyteImagesError):
    """A Python file or module named on the command line could not be loaded."""
