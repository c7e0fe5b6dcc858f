"""Layer kinds: frozen values holding their normalised arguments.

Each layer knows how to check itself against the filesystem (`validate`) and what it adds to
the image identifier (`identity`). The identity is a plain value for `_encoding.encode`: it
starts with the layer's kind, then the normalised arguments, then, for every file the layer
copies or reads, its relative path, permission bits and SHA-256. Absolute paths never appear.
How a layer renders to Dockerfile instructions lives in the renderer, keyed on the same kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from ._encoding import Encodable
from ._errors import SourceError, SourceNotFoundError
from ._files import Tree
from ._secret import Secret
from ._sources import (
    SourceContext,
    folder_entries,
    relative_to_first,
    requirement_files,
    single_file,
)
from ._uvscript import read_script_metadata

ProjectInstallMode = Literal["dependencies_only", "install_project"]


def _secrets(secrets: tuple[Secret, ...]) -> Encodable:
    return tuple((s.key, s.group, None if s.mount is None else s.mount.as_posix(), s.as_env_var) for s in secrets)


def _index(url: str | None) -> str | None:
    """An index URL without user:password: rotating a token must not change the image tag."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _project_files(pyproject: Path, lock: Path, lock_name: str, mode: str, ctx: SourceContext) -> Encodable:
    """The pyproject and lock files, or with install_project the whole project folder."""
    pyproject_entry = single_file(pyproject, ctx, "pyproject file")
    lock_entry = single_file(lock, ctx, f"{lock_name} file")
    if mode == "install_project":
        return folder_entries(pyproject.parent, ctx).identity()
    return (pyproject_entry.identity(), lock_entry.identity())


class Layer(ABC):
    """Base of every layer kind."""

    KIND: ClassVar[str] = "layer"

    def validate(self) -> None:
        """Raise a SourceError if a file or folder this layer needs is missing."""
        self.identity(SourceContext())

    @abstractmethod
    def identity(self, ctx: SourceContext) -> Encodable:
        """What this layer adds to the image identifier (reads the files it names)."""


@dataclass(frozen=True)
class _PythonInstall(Layer):
    """Options shared by every layer that installs Python packages with uv."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    pre: bool = False
    extra_args: str | None = None
    secret_mounts: tuple[Secret, ...] = ()

    def _install_options(self) -> Encodable:
        return (
            _index(self.index_url),
            tuple(_index(u) for u in self.extra_index_urls),
            self.pre,
            self.extra_args,
            _secrets(self.secret_mounts),
        )


@dataclass(frozen=True)
class AptPackages(Layer):
    KIND: ClassVar[str] = "apt"
    packages: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.packages, _secrets(self.secret_mounts))


@dataclass(frozen=True)
class PipPackages(_PythonInstall):
    KIND: ClassVar[str] = "pip"
    packages: tuple[str, ...] = ()

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.packages, self._install_options())


@dataclass(frozen=True)
class Requirements(_PythonInstall):
    KIND: ClassVar[str] = "requirements"
    file: Path = Path("requirements.txt")

    def files(self) -> list[Path]:
        """The requirements file and what it includes with -r/-c."""
        return requirement_files(self.file)

    def identity(self, ctx: SourceContext) -> Encodable:
        paths = self.files()
        named = zip(relative_to_first(paths), paths, strict=True)
        files = tuple((rel, *single_file(p, ctx, "requirements file").identity()[1:]) for rel, p in named)
        return (self.KIND, files, self._install_options())


@dataclass(frozen=True)
class UVProject(_PythonInstall):
    KIND: ClassVar[str] = "uv_project"
    pyproject: Path = Path("pyproject.toml")
    uvlock: Path = Path("uv.lock")
    project_install_mode: ProjectInstallMode = "dependencies_only"

    def identity(self, ctx: SourceContext) -> Encodable:
        files = _project_files(self.pyproject, self.uvlock, "uv.lock", self.project_install_mode, ctx)
        return (self.KIND, self.project_install_mode, files, self._install_options())


@dataclass(frozen=True)
class PoetryProject(Layer):
    KIND: ClassVar[str] = "poetry_project"
    pyproject: Path = Path("pyproject.toml")
    poetry_lock: Path = Path("poetry.lock")
    extra_args: str | None = None
    secret_mounts: tuple[Secret, ...] = ()
    project_install_mode: ProjectInstallMode = "dependencies_only"

    def identity(self, ctx: SourceContext) -> Encodable:
        files = _project_files(self.pyproject, self.poetry_lock, "poetry.lock", self.project_install_mode, ctx)
        options = (self.extra_args, _secrets(self.secret_mounts))
        return (self.KIND, self.project_install_mode, files, options)


@dataclass(frozen=True)
class UVScript(_PythonInstall):
    """A uv script's dependencies, installed from its header; the script itself is copied too,
    so its whole text (not only the header) is part of the identifier."""

    KIND: ClassVar[str] = "uv_script"
    script: Path = Path("script.py")

    def validate(self) -> None:
        super().validate()
        read_script_metadata(self.script)

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, single_file(self.script, ctx, "uv script").identity(), self._install_options())


@dataclass(frozen=True)
class SourceFile(Layer):
    KIND: ClassVar[str] = "source_file"
    src: Path = Path()
    dst: str = "."

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.dst, single_file(self.src, ctx, "source file").identity())


@dataclass(frozen=True)
class SourceFolder(Layer):
    KIND: ClassVar[str] = "source_folder"
    src: Path = Path()
    dst: str = "."
    copy_contents_only: bool = False

    @property
    def target_name(self) -> str | None:
        """The folder created under `dst`, or None when only the contents are copied."""
        return None if self.copy_contents_only else self.src.name

    def tree(self, ctx: SourceContext) -> Tree:
        return folder_entries(self.src, ctx)

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.dst, self.target_name, self.tree(ctx).identity())


@dataclass(frozen=True)
class Env(Layer):
    KIND: ClassVar[str] = "env"
    env_vars: tuple[tuple[str, str], ...] = ()

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.env_vars)


@dataclass(frozen=True)
class WorkDir(Layer):
    KIND: ClassVar[str] = "workdir"
    workdir: str = "/"

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.workdir)


@dataclass(frozen=True)
class Commands(Layer):
    KIND: ClassVar[str] = "commands"
    commands: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.commands, _secrets(self.secret_mounts))


@dataclass(frozen=True)
class DockerIgnore(Layer):
    """Ignore rules for every folder the image copies (see `_sources`)."""

    KIND: ClassVar[str] = "dockerignore"
    path: Path = Path(".dockerignore")

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, single_file(self.path, ctx, "dockerignore file").identity()[1:])


@dataclass(frozen=True)
class PythonWheels(Layer):
    """Install every wheel of a local folder (the project's `dist/`), as `with_local_v2` does."""

    KIND: ClassVar[str] = "python_wheels"
    wheel_dir: Path = Path("dist")
    package_name: str | None = None

    def wheels(self) -> list[Path]:
        if not self.wheel_dir.is_dir():
            raise SourceNotFoundError(
                f"wheel folder {self.wheel_dir} does not exist; build the wheels first (e.g. `uv build`)"
            )
        found = sorted(self.wheel_dir.glob("*.whl"))
        if not found:
            raise SourceError(f"no .whl files in {self.wheel_dir}; build the wheels first (e.g. `uv build`)")
        return found

    def identity(self, ctx: SourceContext) -> Encodable:
        wheels = tuple(single_file(w, ctx, "wheel").identity() for w in self.wheels())
        return (self.KIND, self.package_name, wheels)


@dataclass(frozen=True)
class DebianBase(Layer):
    """The environment `from_debian_base` prepares: uv, a virtual environment of the image's
    Python version on PATH, and optionally the `flyte` package. Rendered from the base template."""

    KIND: ClassVar[str] = "debian_base"
    install_flyte: bool = True
    flyte_version: str | None = None

    def identity(self, ctx: SourceContext) -> Encodable:
        return (self.KIND, self.install_flyte, self.flyte_version)
