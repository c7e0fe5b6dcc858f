"""The `Image` methods that install Python packages (a mixin of `Image`; each returns a new one)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .._errors import InvalidLayerArgument
from .._formats import validation as check
from .args import install_mode, install_options, optional_text, pip_packages
from .secret import SecretRequest, normalize_secrets

if TYPE_CHECKING:
    from .layers.base import Layer
    from .layers.python import ProjectInstallMode

_Self = TypeVar("_Self", bound="PackageMethods")


class PackageMethods:
    def _with_layer(self: _Self, layer: Layer) -> _Self:
        raise NotImplementedError

    def with_pip_packages(
        self: _Self,
        *packages: str,
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
    ) -> _Self:
        """Install Python packages with uv (requirement specifiers, sorted: order does not matter).

        Example: `image.with_pip_packages("numpy==2.1.0", "pandas>=2")`
        """
        from .layers.python import PipPackages

        names = pip_packages(packages)
        options = install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self._with_layer(PipPackages(packages=names, **options))

    def with_requirements(
        self: _Self,
        file: str | Path,
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
    ) -> _Self:
        """Install a requirements .txt file with uv. Files it includes with -r/-c count too."""
        path = check.local_path("file", file)
        if path.suffix != ".txt":
            raise InvalidLayerArgument("file", f"{str(file)!r} is not a .txt requirements file")
        from .layers.python import Requirements

        options = install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self._with_layer(Requirements(file=path, **options))

    def with_uv_project(
        self: _Self,
        pyproject_file: str | Path,
        uvlock: Path | None = None,
        index_url: str | None = None,
        extra_index_urls: list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
        project_install_mode: ProjectInstallMode = "dependencies_only",
    ) -> _Self:
        """Install a uv project's locked dependencies (pyproject.toml + uv.lock beside it when the
        image is planned; none: resolved at build time, as the SDK's `uv sync` does). With
        project_install_mode="install_project" the project folder is copied and installed too.
        """
        from .layers.python import UVProject

        layer = UVProject(
            pyproject=check.local_path("pyproject_file", pyproject_file),
            uvlock=check.local_path("uvlock", uvlock) if uvlock is not None else None,
            **install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts),
            project_install_mode=install_mode(project_install_mode),
        )
        return self._with_layer(layer)

    def with_poetry_project(
        self: _Self,
        pyproject_file: str | Path,
        poetry_lock: Path | None = None,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
        project_install_mode: ProjectInstallMode = "dependencies_only",
    ) -> _Self:
        """Install a poetry project's locked dependencies (pyproject.toml + poetry.lock beside it).

        Example: `image.with_poetry_project("pyproject.toml", extra_args="--only main")`
        """
        from .layers.python import PoetryProject

        pyproject = check.local_path("pyproject_file", pyproject_file)
        lock = pyproject.parent / "poetry.lock" if poetry_lock is None else check.local_path("poetry_lock", poetry_lock)
        layer = PoetryProject(
            pyproject=pyproject,
            poetry_lock=lock,
            extra_args=optional_text("extra_args", extra_args),
            secret_mounts=normalize_secrets(secret_mounts),
            project_install_mode=install_mode(project_install_mode),
        )
        return self._with_layer(layer)

    def with_pixi_project(
        self: _Self,
        manifest_file: str | Path,
        pixi_lock: Path | None = None,
        environment: str = "default",
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
        project_install_mode: ProjectInstallMode = "dependencies_only",
    ) -> _Self:
        """Install a pixi project's environment (conda and PyPI packages) and make it the image's
        environment (later pip layers install into it). `manifest_file` is a pixi.toml, a
        pyproject.toml with [tool.pixi], or the project folder; the pixi.lock beside it (or
        `pixi_lock`) is used with --locked. Building needs conda channels and pixi's image.

        Example: `image.with_pixi_project("pixi.toml", environment="gpu")`
        """
        from .layers.pixi import PixiProject, environment_name

        layer = PixiProject(
            manifest=check.local_path("manifest_file", manifest_file),
            pixi_lock=check.local_path("pixi_lock", pixi_lock) if pixi_lock is not None else None,
            environment=environment_name(environment),
            extra_args=optional_text("extra_args", extra_args),
            secret_mounts=normalize_secrets(secret_mounts),
            project_install_mode=install_mode(project_install_mode),
        )
        return self._with_layer(layer)

    def with_uv(self: _Self) -> _Self:
        """Keep uv in the image (at /usr/local/bin/uv, the pinned version the installs use), for
        code that runs uv at run time; without it the install steps mount uv only while they run.
        """
        from .layers.python import UVBinary

        return self._with_layer(UVBinary())

    def with_local_v2(self: _Self) -> _Self:
        """Install the wheels found in `./dist` (a locally built SDK), as the SDK's dev mode does."""
        from .layers.python import PythonWheels

        return self._with_layer(PythonWheels(wheel_dir=Path("dist").absolute(), package_name="flyte"))
