"""Load the Images and Environments defined in a Python file or module named on the command line.

A target is `path/to/file.py`, `path/to/file.py:NAME`, `package.module` or `package.module:NAME`.
Without NAME, every public module-level Image and Environment is found, also inside module-level
lists, tuples and dicts (named `images[0]`, `images['gpu']`), in definition order. NAME may
name an Image, an Environment, a list/tuple/dict of them, or a function taking no arguments
that returns any of these. Whatever the module prints while it is imported goes to stderr, so
a command's stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeGuard

from ._errors import InvalidImageError, LoadError

if TYPE_CHECKING:
    from ._image.environment import Environment

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def split_target(target: str) -> tuple[str, str | None]:
    # A Windows drive letter never reaches here (POSIX only), so the last ':' separates NAME.
    if ":" in target:
        where, _, name = target.rpartition(":")
        return where, name or None
    return target, None


def load_module(where: str) -> ModuleType:
    path = Path(where)
    if where.endswith(".py") or path.exists():
        if not path.exists():
            raise LoadError(f"{where} does not exist; give path/to/file.py or package.module")
        if not path.is_file():
            raise LoadError(f"{where} is not a Python file; give path/to/file.py or package.module")
        return _load_file(path.resolve())
    if not _MODULE.match(where):
        raise LoadError(f"{where!r} is neither an existing .py file nor a module name like 'pkg.images'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        with _stdout_to_stderr():
            return importlib.import_module(where)
    except InvalidImageError as exc:
        raise InvalidImageError(f"importing {where} failed: {exc}") from exc
    except ImportError as exc:
        raise LoadError(f"cannot import module {where!r}: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"importing {where} failed: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Both Python's sys.stdout and file descriptor 1 point at stderr for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _load_file(path: Path) -> ModuleType:
    name = "_flyte_images_target_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its sibling modules
    try:
        with _stdout_to_stderr():
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, InvalidImageError):  # the file loads; an image in it is wrong (exit 1, not 2)
            raise InvalidImageError(f"running {path} failed: {exc}") from exc
        raise LoadError(f"running {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _model_types() -> tuple[type, ...]:
    """Image, and Environment when its module is loaded: no value can be an Environment before
    that, and a file defining only Images then never loads the environment model."""
    from ._image.image import Image

    environment = sys.modules.get("flyte_images._image.environment")
    return (Image,) if environment is None else (environment.Environment, Image)


def is_environment(value: object) -> TypeGuard[Environment]:
    """isinstance(value, Environment), without loading the environment model to say no."""
    environment = sys.modules.get("flyte_images._image.environment")
    return environment is not None and isinstance(value, environment.Environment)


def _public(module: ModuleType) -> list[tuple[str, Any]]:
    """The Images and Environments of a module's public names, also inside lists and dicts."""
    found: list[tuple[str, Any]] = []
    for name, value in vars(module).items():
        if not name.startswith("_"):
            _collect(name, value, found)
    return found


def _collect(name: str, value: Any, out: list[tuple[str, Any]], depth: int = 0) -> None:
    if isinstance(value, _model_types()):
        out.append((name, value))
    elif depth == 0 and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _collect(f"{name}[{i}]", item, out, depth + 1)
    elif depth == 0 and isinstance(value, dict):
        for key, item in value.items():
            _collect(f"{name}[{key!r}]", item, out, depth + 1)


def _named(where: str, module: ModuleType, name: str) -> list[tuple[str, Any]]:
    import inspect

    if not hasattr(module, name):
        listed = ", ".join(n for n, _ in _public(module)) or "none"
        raise LoadError(f"{where} defines no {name!r}; the Images and Environments it defines: {listed}")
    value = getattr(module, name)
    if callable(value) and not isinstance(value, (type, *_model_types())):
        try:
            needed = [p for p in inspect.signature(value).parameters.values() if p.default is p.empty
                      and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
        except (TypeError, ValueError):
            needed = []
        if needed:
            raise LoadError(f"{where}:{name} takes arguments; name a function that takes none, or a value")
        try:
            with _stdout_to_stderr():
                value = value()
        except Exception as exc:
            raise LoadError(f"calling {where}:{name}() failed: {type(exc).__name__}: {exc}") from exc
    out: list[tuple[str, Any]] = []
    _collect(name, value, out)
    if not out:
        raise LoadError(f"{where}:{name} is a {type(value).__name__}, not an Image or an Environment")
    return out


def definitions_of(target: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(environments, images) a target defines (or the one it names), by name."""
    where, name = split_target(target)
    module = load_module(where)
    found = _named(where, module, name) if name is not None else _public(module)
    if not found:
        raise LoadError(f"{where} defines no Environment or Image at module level")
    envs = [(n, v) for n, v in found if is_environment(v)]
    images = [(n, v) for n, v in found if not is_environment(v)]
    return envs, images


def images_of(target: str) -> list[tuple[str, Any]]:
    """(name, Image) for every Image a target defines and every Environment's image (named by
    the environment; a string image becomes a reference image)."""
    from ._image.image import Image

    envs, images = definitions_of(target)
    named: list[tuple[str, Any]] = list(images)
    for _var, env in envs:
        from ._image.environment import image_of

        image = image_of(env)
        named.append((env.name, image if isinstance(image, Image) else Image.from_base(image)))
    return named
