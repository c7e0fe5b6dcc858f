"""Finding a build backend: a built-in one (`docker`, `buildkit`) by name, any other by name
through the `flyte_images.builders` entry points of installed packages, or an object given to
`init(image_builder=...)` or `build(..., builder=...)`.

A built-in name is resolved without reading any package metadata: the default build does not pay
for importing importlib.metadata and reading every installed distribution's entry points, and no
installed package can take the name of a built-in backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from flyte_images.builders.base import CAPABILITIES, is_backend, missing_members

from .._config import configured_builder_object
from .._errors import BuildError, ConfigError, InvalidBuilderError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from importlib.metadata import EntryPoint

    from flyte_images.builders.base import Builder, BuildRequest, BuildResult, Progress

ENTRY_POINT_GROUP = "flyte_images.builders"
DEFAULT_BUILDER = "docker"
BUILT_IN = ("buildkit", "docker")
# The Flyte SDK calls the local Docker builder "local"; accept its name too.
_ALIASES = {"local": "docker"}
_SHAPE = (
    "`name`, the capabilities `exports_cache`, `multi_platform` and `loads`, "
    "`local_exists(reference)` and `build(request, progress)`"
)


def built_in(name: str) -> Callable[[], Builder] | None:
    """The built-in backend called `name` (its class), or None. Each is imported when chosen: the
    buildkit backend brings ssl and sockets, which a docker build never needs."""
    if name == "docker":
        from flyte_images.builders.docker import DockerBuilder

        return DockerBuilder
    if name == "buildkit":
        from flyte_images.builders.buildkit import BuildkitBuilder

        return BuildkitBuilder
    return None


def entry_points(group: str) -> Iterable[EntryPoint]:
    """The entry points of `group` in the installed packages; importlib.metadata (about 15 ms to
    import) is imported only when a name is not a built-in one."""
    from importlib.metadata import entry_points as installed

    return installed(group=group)


def available_builders() -> dict[str, str]:
    """Every backend that can be chosen by name, with where it comes from: "built in", or the
    value of its entry point (`module:attribute`; the first of a name counts, as importlib's)."""
    found = dict.fromkeys(BUILT_IN, "built in")
    for entry in entry_points(ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


class WholeImageBuilder:
    """A Flyte SDK image builder object where a backend goes: anything with the SDK's
    `ImageBuilder` method `build_image(image, dry_run, wait=True, force=False)` (a coroutine
    function or a plain one) that returns the SDK's `ImageBuild` (its `uri`) or a uri.

    Such an object builds whole images, not staged contexts, so it takes the place of the whole
    engine route, not of one step of it: flyte-images still computes the image's identifier and
    applies its skip rule (the registry for a pushed image; unless `force`), then hands the object
    the Image as the SDK does, with `wait=True` (our builds finish before returning), and reports
    the uri the object returns. The object's `get_checkers()` are not asked (the registry is), and
    an image built by it is never split for the append path. As a backend it cannot tell what a
    local store holds (`local_exists` is None) and builds no staged context (`build` refuses), so
    it has none of the capabilities of a staged build."""

    name: ClassVar[str] = "image_builder"
    exports_cache: ClassVar[bool] = False
    multi_platform: ClassVar[bool] = False
    loads: ClassVar[bool] = False

    def __init__(self, target: object) -> None:
        self.target = target

    def local_exists(self, reference: str) -> bool | None:
        del reference
        return None

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        del request, progress
        raise BuildError(f"{type(self.target).__name__} builds whole images (build_image), not a staged context")

    def __repr__(self) -> str:
        return f"WholeImageBuilder({self.target!r})"


def is_builder_object(value: object) -> bool:
    """Whether `value` can be given as a builder: one of our backends or an SDK image builder."""
    if isinstance(value, type):
        return False
    return is_backend(value) or callable(getattr(value, "build_image", None))


def _not_a_builder(value: object) -> InvalidBuilderError:
    kind = "a class" if isinstance(value, type) else type(value).__name__
    missing = [] if isinstance(value, type) else missing_members(value)
    # It has everything but some capabilities: it was meant as a backend, so say what to add.
    lacks = (
        f" (it does not declare {', '.join(missing)}: set each to True or False)"
        if missing and all(m in CAPABILITIES for m in missing)
        else ""
    )
    return InvalidBuilderError(
        f"{value!r} ({kind}) is not an image builder{lacks}: give a builder's name, an instance with {_SHAPE}, "
        "or a Flyte SDK image builder (an instance with `build_image(image, dry_run, wait, force)`)"
    )


def get_builder(name_or_instance: str | object | None = None) -> Builder:
    """The backend called `name_or_instance`, or that object itself when it already is one (a
    Flyte SDK image builder object is wrapped in a `WholeImageBuilder`).

    No name: the object given to init(image_builder=...), else the configured name
    (FLYTE_IMAGES_BUILDER or the config file), else docker.
    """
    if name_or_instance is None:
        name_or_instance = configured_builder_object()
    if isinstance(name_or_instance, WholeImageBuilder):
        return name_or_instance
    if is_backend(name_or_instance):
        return name_or_instance
    if name_or_instance is not None and not isinstance(name_or_instance, str):
        if not is_builder_object(name_or_instance):
            raise _not_a_builder(name_or_instance)
        return WholeImageBuilder(name_or_instance)
    from .. import _config

    chosen = name_or_instance or _config.configured_builder() or DEFAULT_BUILDER
    chosen = _ALIASES.get(chosen, chosen)
    if chosen == "append":
        if name_or_instance is None:  # configured: the engine part is built by the default backend
            chosen = DEFAULT_BUILDER
        else:
            raise ConfigError(
                "'append' is the build path that appends file layers in the registry, not an engine backend; "
                "pass it to build(..., builder='append') or --builder append, and an engine backend here"
            )
    loaded: Any = built_in(chosen)
    where = "built in"
    if loaded is None:
        entry = next((e for e in entry_points(ENTRY_POINT_GROUP) if e.name == chosen), None)
        if entry is None:
            names = sorted({*available_builders(), *_ALIASES})
            raise InvalidBuilderError(
                f"no image builder named {chosen!r}; available: {', '.join(names)} "
                f"(other backends register in the entry-point group {ENTRY_POINT_GROUP!r})"
            )
        loaded, where = entry.load(), entry.value
    # A class or a factory is called; an object that already is a backend is used as is.
    backend = loaded if is_backend(loaded) else loaded()
    if not is_backend(backend):
        raise InvalidBuilderError(
            f"the image builder {chosen!r} ({where}) does not declare {', '.join(missing_members(backend))}; "
            f"a backend has {_SHAPE}"
        )
    return backend
