"""Finding a build backend: by name, only through the `flyte_images.builders` entry points.

The built-in `docker` backend is registered in pyproject.toml exactly like a third-party one,
so there is no table of built-ins here: what is installed is what can be chosen.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder

ENTRY_POINT_GROUP = "flyte_images.builders"
DEFAULT_BUILDER = "docker"
# The Flyte SDK calls the local Docker builder "local"; accept its name too.
_ALIASES = {"local": "docker"}


def available_builders() -> dict[str, EntryPoint]:
    """Every registered backend by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_builder(name_or_instance: str | Builder | None = None) -> Builder:
    """The backend called `name_or_instance`, or that object itself when it already is one.

    No name: the configured one (FLYTE_IMAGES_BUILDER or the config file), else docker.
    """
    from flyte_images.builders.base import Builder

    if isinstance(name_or_instance, Builder) and not isinstance(name_or_instance, type):
        return name_or_instance
    if name_or_instance is not None and not isinstance(name_or_instance, str):
        raise ConfigError(
            f"{name_or_instance!r} is not an image builder: give a builder's name or an instance with "
            "`name`, `local_exists(reference)` and `build(request, progress)`"
        )
    from . import _config

    chosen = name_or_instance or _config.configured_builder() or DEFAULT_BUILDER
    chosen = _ALIASES.get(chosen, chosen)
    plugins = available_builders()
    if chosen not in plugins:
        names = sorted({*plugins, *(alias for alias, target in _ALIASES.items() if target in plugins)})
        raise ConfigError(
            f"no image builder named {chosen!r}; available: {', '.join(names) or 'none'} "
            f"(backends register in the entry-point group {ENTRY_POINT_GROUP!r})"
        )
    loaded: Any = plugins[chosen].load()
    # A class or a factory is called; an object that already is a backend is used as is.
    backend = loaded if isinstance(loaded, Builder) and not isinstance(loaded, type) else loaded()
    if not isinstance(backend, Builder):
        raise ConfigError(
            f"the image builder {chosen!r} ({plugins[chosen].value}) does not provide "
            "`name`, `local_exists(reference)` and `build(request, progress)`"
        )
    return backend
