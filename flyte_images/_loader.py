"""Load the Image objects defined in a Python file or module named on the command line.

A target is `path/to/file.py`, `path/to/file.py:NAME`, `package.module` or `package.module:NAME`.
Without NAME every module-level Image is returned, in definition order.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ._errors import LoadError

T = TypeVar("T")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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
        return importlib.import_module(where)
    except ImportError as exc:
        raise LoadError(f"cannot import module {where!r}: {exc}") from exc


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
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"running {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def objects_of(target: str, kind: type[T]) -> list[tuple[str, T]]:
    """(name, object) of every `kind` instance the target defines, or the one it names."""
    where, name = split_target(target)
    module = load_module(where)
    if name is not None:
        if not hasattr(module, name):
            found = [n for n, v in vars(module).items() if isinstance(v, kind)]
            listed = ", ".join(found) or "none"
            raise LoadError(f"{where} defines no {name!r}; the {kind.__name__} objects it defines: {listed}")
        value = getattr(module, name)
        if not isinstance(value, kind):
            raise LoadError(f"{where}:{name} is a {type(value).__name__}, not a {kind.__name__}")
        return [(name, value)]
    found_all = [(n, v) for n, v in vars(module).items() if isinstance(v, kind) and not n.startswith("_")]
    if not found_all:
        raise LoadError(f"{where} defines no {kind.__name__} at module level")
    return found_all


def definitions_of(target: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(environments, images) a target defines (or the one it names), by module-level name."""
    from ._environment import Environment
    from ._image import Image

    where, name = split_target(target)
    module = load_module(where)
    if name is not None:
        value = getattr(module, name, None)
        if isinstance(value, Environment):
            return [(name, value)], []
        if isinstance(value, Image):
            return [], [(name, value)]
        found = [n for n, v in vars(module).items() if isinstance(v, (Environment, Image))]
        raise LoadError(f"{where} defines no Environment or Image {name!r}; it defines: {', '.join(found) or 'none'}")
    public = [(n, v) for n, v in vars(module).items() if not n.startswith("_")]
    envs = [(n, v) for n, v in public if isinstance(v, Environment)]
    images = [(n, v) for n, v in public if isinstance(v, Image)]
    if not envs and not images:
        raise LoadError(f"{where} defines no Environment or Image at module level")
    return envs, images
