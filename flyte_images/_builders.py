"""Finding a build backend by name: built-in ones, then the `flyte_images.builders` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder

ENTRY_POINT_GROUP = "flyte_images.builders"
DEFAULT_BUILDER = "docker"
# The Flyte SDK calls the local Docker builder "local"; accept its name too.
_ALIASES = {"local": "docker"}


def _builtin(name: str) -> Builder | None:
    if name == "docker":
        from flyte_images.builders.docker import DockerBuilder

        return DockerBuilder()
    return None


def get_builder(name: str | None = None) -> Builder:
    """The backend called `name`, or the configured one (FLYTE_IMAGES_BUILDER, default docker)."""
    from . import _config

    chosen = name or _config.configured_builder() or DEFAULT_BUILDER
    chosen = _ALIASES.get(chosen, chosen)
    found = _builtin(chosen)
    if found is not None:
        return found
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if chosen in plugins:
        loaded: Any = plugins[chosen].load()
        # A class or a factory function is called; an object with a `build` method is used as is.
        if isinstance(loaded, type) or (callable(loaded) and not hasattr(loaded, "build")):
            loaded = loaded()
        return loaded  # type: ignore[no-any-return]
    known = ", ".join(sorted({"docker", "local", *plugins}))
    raise ConfigError(f"no image builder named {chosen!r}; available: {known}")
