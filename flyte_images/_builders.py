"""Finding a build backend: by name, only through the `flyte_images.builders` entry points, or
an object given to `init(image_builder=...)` or `build(..., builder=...)`.

The built-in `docker` backend is registered in pyproject.toml exactly like a third-party one,
so there is no table of built-ins here: what is installed is what can be chosen.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ._config import configured_builder_object
from ._errors import BuildError, ConfigError, InvalidBuilderError

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder, BuildRequest, BuildResult, Progress

ENTRY_POINT_GROUP = "flyte_images.builders"
DEFAULT_BUILDER = "docker"
# The Flyte SDK calls the local Docker builder "local"; accept its name too.
_ALIASES = {"local": "docker"}


def available_builders() -> dict[str, Any]:
    """Every registered backend by name (entry points: `name`, `value`, `load()`)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


# ----- entry points without importing importlib.metadata ---------------------------------------


class EntryPoint:
    """An entry point as `importlib.metadata.EntryPoint` has it: name, value, group, `load()`."""

    pattern = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")

    def __init__(self, name: str, value: str, group: str) -> None:
        self.name, self.value, self.group = name, value, group

    def load(self) -> Any:
        """The module the value names, or the object named after its `:` (importlib.metadata's rule)."""
        import importlib

        match = self.pattern.match(self.value)
        if match is None:  # importlib.metadata fails here too, with this error
            raise AttributeError("'NoneType' object has no attribute 'group'")
        loaded: Any = importlib.import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            loaded = getattr(loaded, attr)
        return loaded

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def entry_points(*, group: str) -> Iterable[Any]:
    """`importlib.metadata.entry_points(group=group)`: the same entry points, in the same order.

    Importing importlib.metadata costs about 15 ms (email, zipfile, csv, ...), as much as a
    no-op build spends on its real work, so the common layout is read here directly: when the
    standard path finder is the only distribution finder and the folders on sys.path hold plain
    `*.dist-info` / `*.egg-info` folders, their `entry_points.txt` files are read as
    importlib.metadata reads them (the first distribution of each normalised name counts). Any
    other layout (a zip or an egg on sys.path, another finder, a distribution named only inside
    its metadata, a file importlib.metadata would fail on) is left to importlib.metadata.
    """
    found = _scan(group)
    if found is None:
        from importlib.metadata import entry_points as read_entry_points

        return read_entry_points(group=group)
    return found


def _normalize(name: str) -> str:
    """importlib.metadata's Prepared.normalize: PEP 503, with dashes as underscores."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def _scan(group: str) -> list[EntryPoint] | None:
    from importlib.machinery import PathFinder

    if any(getattr(f, "find_distributions", None) is not None and f is not PathFinder for f in sys.meta_path):
        return None
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for root in list(sys.path):
        if not isinstance(root, str) or os.path.basename(root).lower().endswith(".egg"):
            return None
        try:
            children = os.listdir(root or ".")
        except Exception:  # importlib.metadata suppresses everything here too
            if os.path.isfile(root):  # maybe a zip of distributions
                return None
            continue
        infos: dict[str, list[str]] = {}  # importlib.metadata's Lookup: grouped by name, in listing order
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                infos.setdefault(_normalize(low.rpartition(".")[0].partition("-")[0]), []).append(child)
        for children_of_name in infos.values():
            for child in children_of_name:
                stem, ext = os.path.splitext(child)
                name = _normalize(stem.partition("-")[0]) if ext in (".dist-info", ".egg-info") else ""
                if not name:  # importlib.metadata would read the name from the metadata file
                    return None
                if name in seen:
                    continue
                seen.add(name)
                if not _read_entry_points(os.path.join(root, child, "entry_points.txt"), group, found):
                    return None
    return found


def _read_entry_points(path: str, group: str, found: list[EntryPoint]) -> bool:
    """Append the entry points of `group` in the file at `path` (none if it is absent); False
    where importlib.metadata would raise (unreadable text, a line without `=` in a section)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return True
    except (OSError, ValueError):
        return False
    section = None
    for line in text.splitlines():
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if value.startswith("[") and value.endswith("]"):
            section = value.strip("[]")
            continue
        if section is None:
            continue
        name, equals, target = value.partition("=")
        if not equals:
            return False
        if section == group:
            found.append(EntryPoint(name.strip(), target.strip(), section))
    return True


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
    local store holds (`local_exists` is None) and builds no staged context (`build` refuses)."""

    name: ClassVar[str] = "image_builder"
    exports_cache: ClassVar[bool] = False

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
    from flyte_images.builders.base import Builder

    if isinstance(value, type):
        return False
    return isinstance(value, Builder) or callable(getattr(value, "build_image", None))


def _not_a_builder(value: object) -> InvalidBuilderError:
    kind = "a class" if isinstance(value, type) else type(value).__name__
    return InvalidBuilderError(
        f"{value!r} ({kind}) is not an image builder: give a builder's name, an instance with `name`, "
        "`local_exists(reference)` and `build(request, progress)`, or a Flyte SDK image builder (an instance "
        "with `build_image(image, dry_run, wait, force)`)"
    )


def get_builder(name_or_instance: str | object | None = None) -> Builder:
    """The backend called `name_or_instance`, or that object itself when it already is one (a
    Flyte SDK image builder object is wrapped in a `WholeImageBuilder`).

    No name: the object given to init(image_builder=...), else the configured name
    (FLYTE_IMAGES_BUILDER or the config file), else docker.
    """
    from flyte_images.builders.base import Builder

    if name_or_instance is None:
        name_or_instance = configured_builder_object()
    if isinstance(name_or_instance, WholeImageBuilder):
        return name_or_instance
    if isinstance(name_or_instance, Builder) and not isinstance(name_or_instance, type):
        return name_or_instance
    if name_or_instance is not None and not isinstance(name_or_instance, str):
        if not is_builder_object(name_or_instance):
            raise _not_a_builder(name_or_instance)
        return WholeImageBuilder(name_or_instance)
    from . import _config

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
    plugins = available_builders()
    if chosen not in plugins:
        names = sorted({*plugins, *(alias for alias, target in _ALIASES.items() if target in plugins)})
        raise InvalidBuilderError(
            f"no image builder named {chosen!r}; available: {', '.join(names) or 'none'} "
            f"(backends register in the entry-point group {ENTRY_POINT_GROUP!r})"
        )
    loaded: Any = plugins[chosen].load()
    # A class or a factory is called; an object that already is a backend is used as is.
    backend = loaded if isinstance(loaded, Builder) and not isinstance(loaded, type) else loaded()
    if not isinstance(backend, Builder):
        raise InvalidBuilderError(
            f"the image builder {chosen!r} ({plugins[chosen].value}) does not provide "
            "`name`, `local_exists(reference)` and `build(request, progress)`"
        )
    return backend
