"""`Image`: an immutable description of a container image, built up one layer at a time.

Rules (see also the README):
- Start from a constructor (`from_debian_base`, `from_base`, `from_dockerfile`, `from_uv_script`,
  `from_ref_name`); `Image(...)` itself is refused.
- An image from `from_base(uri)` or `from_ref_name(name)` that is never changed is a reference to
  an existing image: it is not built and its uri is that image. Adding a layer or `clone(...)`
  makes it an image that is built, and then it needs a repository name: `clone(name=...)`.
- A `from_dockerfile` image takes no layers: put everything into the Dockerfile.
- Every `with_*` returns a new Image; nothing is read from disk until the identifier, `validate()`
  or a build needs it, so defining an image never fails because a file is missing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import _config
from . import _validation as check
from ._errors import (
    InvalidLayerArgument,
    LayerNotAllowedError,
    SourceNotFoundError,
)
from ._layers import (
    AptPackages,
    Commands,
    DebianBase,
    DockerIgnore,
    Env,
    Layer,
    PipPackages,
    PoetryProject,
    ProjectInstallMode,
    PythonWheels,
    Requirements,
    SourceFile,
    SourceFolder,
    UVProject,
    UVScript,
    WorkDir,
)
from ._secret import Secret, SecretRequest, normalize_secrets
from ._validation import Architecture

DEFAULT_IMAGE_NAME = "flyte"
DEFAULT_FLYTE_VERSION = "2.12.1"
DEFAULT_PLATFORMS: tuple[str, ...] = ("linux/amd64",)
DEFAULT_BASE_IMAGE = "python:{python_version}-slim-bookworm"
_INSTALL_MODES = ("dependencies_only", "install_project")

_construction = threading.local()


def default_base_image(python_version: tuple[int, int]) -> str:
    """The base of `from_debian_base`: the configured `base_image` (FLYTE_IMAGES_BASE_IMAGE or
    the config file; `{python_version}` is filled in), or the official slim bookworm image."""
    template = _config.configured_base_image() or DEFAULT_BASE_IMAGE
    filled = template.replace("{python_version}", f"{python_version[0]}.{python_version[1]}")
    return check.image_reference("base_image (FLYTE_IMAGES_BASE_IMAGE or the config file)", filled)


@dataclass(frozen=True)
class Image:
    """A container image, described as a base plus an ordered chain of layers.

    Example:
        image = (
            Image.from_debian_base(python_version=(3, 12), install_flyte=False)
            .with_apt_packages("git")
            .with_uv_project("pyproject.toml")
            .with_source_folder(Path("src"))
            .with_env_vars({"LOG_LEVEL": "info"})
        )
        image.uri         # 'registry/flyte:<32 hex digits of the content hash>'
    """

    base_image: str | None = None
    dockerfile: Path | None = None
    registry: str | None = None
    name: str | None = None
    platform: tuple[Architecture, ...] = ("linux/amd64",)
    python_version: tuple[int, int] | None = field(default_factory=check.host_python_version)
    extendable: bool = False
    _is_cloned: bool = False
    _ref_name: str | None = None
    _layers: tuple[Layer, ...] = ()
    _image_registry_secret: Secret | None = None

    def __post_init__(self) -> None:
        if not getattr(_construction, "allowed", False):
            raise TypeError(
                "Image(...) cannot be called directly; start from a constructor such as "
                "Image.from_debian_base(), Image.from_base(uri) or Image.from_dockerfile(path, ...)"
            )

    @classmethod
    def _new(cls, **kwargs: Any) -> Image:
        _construction.allowed = True
        try:
            return cls(**kwargs)
        finally:
            _construction.allowed = False

    def _replace(self, **changes: Any) -> Image:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Image._new(**values)

    # ----- constructors -------------------------------------------------------------------

    @classmethod
    def from_debian_base(
        cls,
        python_version: tuple[int, int] | None = None,
        flyte_version: str | None = None,
        install_flyte: bool = True,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        name: str | None = None,
        platform: tuple[Architecture, ...] | None = None,
    ) -> Image:
        """A slim Debian image with the requested Python, uv and a virtual environment on PATH.

        `python_version` accepts (3, 12) or "3.12" and defaults to this interpreter's version.
        The base image is `python:X.Y-slim-bookworm`, or `FLYTE_IMAGES_BASE_IMAGE` (for mirrors).
        The platform defaults to ("linux/amd64",). With `install_flyte`, the `flyte` package is
        installed (`flyte_version`, default the pinned DEFAULT_FLYTE_VERSION).

        Example:
            Image.from_debian_base(python_version=(3, 12), install_flyte=False)
        """
        version = check.host_python_version() if python_version is None else check.python_version(python_version)
        if flyte_version is not None:
            check.nonempty("flyte_version", flyte_version)
        pinned = (flyte_version or DEFAULT_FLYTE_VERSION) if install_flyte else None
        return cls._new(
            base_image=default_base_image(version),
            registry=_optional_registry(registry),
            name=check.repository_name("name", name) if name is not None else DEFAULT_IMAGE_NAME,
            platform=check.platforms(platform) if platform is not None else DEFAULT_PLATFORMS,
            python_version=version,
            extendable=True,
            _is_cloned=True,
            _layers=(DebianBase(install_flyte=bool(install_flyte), flyte_version=pinned),),
            _image_registry_secret=_registry_secret(registry_secret),
        )

    @classmethod
    def from_base(cls, image_uri: str) -> Image:
        """An existing image, used as is (not built) until a layer is added.

        Example:
            Image.from_base("python:3.12-slim").clone(name="my-app").with_pip_packages("numpy")
        """
        return cls._new(base_image=check.image_reference("image_uri", image_uri), python_version=None)

    @classmethod
    def from_ref_name(cls, name: str = "default") -> Image:
        """The image registered under `name` with `init(images={...})` or FLYTE_IMAGES_REF_<NAME>."""
        ref = check.nonempty("name", name)
        return cls._new(name=ref, _ref_name=ref, python_version=None)

    @classmethod
    def from_dockerfile(
        cls,
        file: Path | str,
        registry: str,
        name: str,
        platform: Architecture | tuple[Architecture, ...] | None = None,
    ) -> Image:
        """An image built from your own Dockerfile; its folder is the build context.

        The identifier covers the Dockerfile and every file of that folder that Docker would send
        (its .dockerignore applied), so editing a copied file changes the tag. No layers can be
        added: put everything into the Dockerfile.
        """
        return cls._new(
            dockerfile=check.local_path("file", file),
            # The SDK's signature requires a registry; "" (or None) means none: the image is loaded.
            registry=_optional_registry(registry) if registry else None,
            name=check.repository_name("name", name),
            platform=check.platforms(platform) if platform is not None else DEFAULT_PLATFORMS,
            python_version=None,
            _is_cloned=True,
        )

    @classmethod
    def from_uv_script(
        cls,
        script: Path | str,
        *,
        name: str,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        python_version: tuple[int, int] | None = None,
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        platform: tuple[Architecture, ...] | None = None,
        secret_mounts: SecretRequest | None = None,
    ) -> Image:
        """An image with the dependencies of a uv script (its `# /// script` header) installed
        and the script copied in. The whole script counts for the tag, not only its header.

        Example:
            Image.from_uv_script("tool.py", name="tool", python_version=(3, 12))
        """
        layer = UVScript(
            script=check.local_path("script", script),
            **_install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts),
        )
        base = cls.from_debian_base(
            python_version=python_version,
            install_flyte=False,
            registry=registry,
            registry_secret=registry_secret,
            name=check.repository_name("name", name),
            platform=platform,
        )
        return base._with_layer(layer)

    # ----- copies -------------------------------------------------------------------------

    def clone(
        self,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        name: str | None = None,
        base_image: str | None = None,
        python_version: tuple[int, int] | None = None,
        addl_layer: Layer | None = None,
        extendable: bool | None = None,
        platform: Architecture | tuple[Architecture, ...] | None = None,
    ) -> Image:
        """A copy with another registry, name, base, Python version or platform set, optionally
        with one more layer. A cloned image is always built, never taken as an existing one.

        Example:
            Image.from_base("python:3.12-slim").clone(name="app", registry="ghcr.io/me")
        """
        changes: dict[str, Any] = {"_is_cloned": True}
        if registry is not None:
            changes["registry"] = _optional_registry(registry)
        if registry_secret is not None:
            changes["_image_registry_secret"] = _registry_secret(registry_secret)
        if name is not None:
            changes["name"] = check.repository_name("name", name)
        if base_image is not None:
            changes["base_image"] = check.image_reference("base_image", base_image)
        if python_version is not None:
            changes["python_version"] = check.python_version(python_version)
        if extendable is not None:
            changes["extendable"] = bool(extendable)
        if platform is not None:
            changes["platform"] = check.platforms(platform)
        image = self._replace(**changes)
        return image._with_layer(addl_layer) if addl_layer is not None else image

    def _with_layer(self, layer: Layer) -> Image:
        if not isinstance(layer, Layer):
            raise InvalidLayerArgument("addl_layer", f"expected a layer, got {type(layer).__name__}")
        if self.dockerfile is not None:
            raise LayerNotAllowedError(
                f"cannot add a {layer.KIND} layer to the Dockerfile-based image {self.name!r}: "
                f"put that step into {self.dockerfile} instead"
            )
        return self._replace(_layers=(*self._layers, layer), _is_cloned=True)

    # ----- layers -------------------------------------------------------------------------

    def with_workdir(self, workdir: str) -> Image:
        """Set the working directory (WORKDIR) for the layers after it and for the container.

        Example: `image.with_workdir("/app")`
        """
        return self._with_layer(WorkDir(workdir=check.nonempty("workdir", workdir)))

    def with_requirements(
        self,
        file: str | Path,
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
    ) -> Image:
        """Install a requirements .txt file with uv. Files it includes with -r/-c count too.

        Example: `image.with_requirements("requirements.txt")`
        """
        path = check.local_path("file", file)
        if path.suffix != ".txt":
            raise InvalidLayerArgument("file", f"{str(file)!r} is not a .txt requirements file")
        options = _install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self._with_layer(Requirements(file=path, **options))

    def with_pip_packages(
        self,
        *packages: str,
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
    ) -> Image:
        """Install Python packages with uv (requirement specifiers, sorted: order does not matter).

        Example: `image.with_pip_packages("numpy==2.1.0", "pandas>=2")`
        """
        names = tuple(sorted({check.pip_requirement(p) for p in packages}))
        if not names:
            raise InvalidLayerArgument("packages", "name at least one package")
        options = _install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self._with_layer(PipPackages(packages=names, **options))

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        """Set environment variables in the image (one ENV instruction).

        Example: `image.with_env_vars({"HF_HOME": "/cache/hf"})`
        """
        if not isinstance(env_vars, dict) or not env_vars:
            raise InvalidLayerArgument("env_vars", f"expected a non-empty dict of str to str, got {env_vars!r}")
        pairs = tuple(sorted((check.env_name(k), check.no_control("env_vars", v)) for k, v in env_vars.items()))
        return self._with_layer(Env(env_vars=pairs))

    def with_source_folder(self, src: Path, dst: str = ".", copy_contents_only: bool = False) -> Image:
        """Copy a local folder into the image, as `dst/<folder name>` (or its contents into `dst`).

        .dockerignore rules and default excludes (.git, .venv, __pycache__, ...) apply.
        Example: `image.with_source_folder(Path("src"), dst="/app")`
        """
        layer = SourceFolder(
            src=check.local_path("src", src),
            dst=check.nonempty("dst", dst),
            copy_contents_only=bool(copy_contents_only),
        )
        return self._with_layer(layer)

    def with_source_file(self, src: Path | list[Path], dst: str = ".") -> Image:
        """Copy one local file (or a list of files) into `dst`, keeping their names and modes.

        Example: `image.with_source_file(Path("config.yaml"), dst="/etc/app")`
        """
        sources = list(src) if isinstance(src, (list, tuple)) else [src]
        paths = [check.local_path("src", s) for s in sources]
        names = [p.name for p in paths]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidLayerArgument(
                "src", f"files with the same name would overwrite each other in {dst!r}: {duplicates}"
            )
        target = check.nonempty("dst", dst)
        image = self
        for path in paths:
            image = image._with_layer(SourceFile(src=path, dst=target))
        return image

    def with_dockerignore(self, path: Path) -> Image:
        """Use this .dockerignore for every folder the image copies (paths relative to its folder)."""
        return self._with_layer(DockerIgnore(path=check.local_path("path", path)))

    def with_uv_project(
        self,
        pyproject_file: str | Path,
        uvlock: Path | None = None,
        index_url: str | None = None,
        extra_index_urls: list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
        project_install_mode: ProjectInstallMode = "dependencies_only",
    ) -> Image:
        """Install a uv project's locked dependencies (pyproject.toml + uv.lock beside it).

        With project_install_mode="install_project" the project folder is copied and installed too.
        Example: `image.with_uv_project("pyproject.toml")`
        """
        pyproject = check.local_path("pyproject_file", pyproject_file)
        lock = check.local_path("uvlock", uvlock) if uvlock is not None else pyproject.parent / "uv.lock"
        options = _install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        layer = UVProject(
            pyproject=pyproject,
            uvlock=lock,
            project_install_mode=_install_mode(project_install_mode),
            **options,
        )
        return self._with_layer(layer)

    def with_poetry_project(
        self,
        pyproject_file: str | Path,
        poetry_lock: Path | None = None,
        extra_args: str | None = None,
        secret_mounts: SecretRequest | None = None,
        project_install_mode: ProjectInstallMode = "dependencies_only",
    ) -> Image:
        """Install a poetry project's locked dependencies (pyproject.toml + poetry.lock beside it).

        Example: `image.with_poetry_project("pyproject.toml", extra_args="--only main")`
        """
        pyproject = check.local_path("pyproject_file", pyproject_file)
        lock = (
            check.local_path("poetry_lock", poetry_lock)
            if poetry_lock is not None
            else pyproject.parent / "poetry.lock"
        )
        layer = PoetryProject(
            pyproject=pyproject,
            poetry_lock=lock,
            extra_args=_optional_text("extra_args", extra_args),
            secret_mounts=normalize_secrets(secret_mounts),
            project_install_mode=_install_mode(project_install_mode),
        )
        return self._with_layer(layer)

    def with_apt_packages(self, *packages: str, secret_mounts: SecretRequest | None = None) -> Image:
        """Install Debian packages with apt-get (sorted: order does not matter).

        Example: `image.with_apt_packages("git", "curl")`
        """
        names = tuple(sorted({check.apt_package(p) for p in packages}))
        if not names:
            raise InvalidLayerArgument("packages", "name at least one apt package")
        return self._with_layer(AptPackages(packages=names, secret_mounts=normalize_secrets(secret_mounts)))

    def with_commands(self, commands: list[str], secret_mounts: SecretRequest | None = None) -> Image:
        """Run shell commands, one RUN step each, in order (do not write `RUN` yourself).

        Example: `image.with_commands(["mkdir -p /data", "echo ready > /data/flag"])`
        """
        items = check.strings("commands", commands)
        if not items:
            raise InvalidLayerArgument("commands", "give at least one command")
        cleaned = tuple(check.nonempty("commands", c, allow_newline=True) for c in items)
        return self._with_layer(Commands(commands=cleaned, secret_mounts=normalize_secrets(secret_mounts)))

    def with_local_v2(self) -> Image:
        """Install the wheels found in `./dist` (a locally built SDK), as the SDK's dev mode does."""
        return self._with_layer(PythonWheels(wheel_dir=Path("dist").absolute(), package_name="flyte"))

    # ----- checks and names ---------------------------------------------------------------

    def validate(self) -> None:
        """Check what the image reads exists; raise a typed error naming what is wrong."""
        if self.dockerfile is not None and not self.dockerfile.is_file():
            raise SourceNotFoundError(f"Dockerfile {self.dockerfile} does not exist")
        if self._ref_name is not None:
            _config.resolve_ref(self._ref_name)
        for layer in self._layers:
            layer.validate()

    @property
    def is_reference(self) -> bool:
        """True for an existing image used as is (never built)."""
        return not self._is_cloned and not self._layers and self.dockerfile is None

    def resolved_base_image(self) -> str | None:
        if self._ref_name is not None and not self.base_image:
            return _config.resolve_ref(self._ref_name)
        return self.base_image

    @property
    def identifier(self) -> str:
        """The content-hashed tag: 32 hex digits of SHA-256 over everything the image is made of.

        Computed afresh on every access (cheap with the stat cache): an edited file gives a new
        tag at once, even in a long-lived notebook.
        """
        from ._plan import plan

        return plan(self).identifier

    @property
    def uri(self) -> str:
        """`registry/name:identifier` (`name:identifier` with no registry); for a reference
        image, the image it refers to."""
        if self.is_reference:
            resolved = self.resolved_base_image()
            assert resolved is not None
            return resolved
        from ._plan import plan

        return plan(self).uri


def _optional_text(parameter: str, value: str | None) -> str | None:
    return None if value is None else check.nonempty(parameter, value).strip()


def _optional_registry(value: str | None) -> str | None:
    return check.registry("registry", value) if value else None


def _registry_secret(value: str | Secret | None) -> Secret | None:
    if value is None:
        return None
    secrets = normalize_secrets(value)
    return secrets[0]


def _install_mode(value: object) -> ProjectInstallMode:
    if value not in _INSTALL_MODES:
        raise InvalidLayerArgument(
            "project_install_mode", f"{value!r} is not one of {', '.join(map(repr, _INSTALL_MODES))}"
        )
    return value  # type: ignore[return-value]


def _install_options(
    index_url: str | None,
    extra_index_urls: object,
    pre: bool,
    extra_args: str | None,
    secret_mounts: SecretRequest | None,
) -> dict[str, Any]:
    return {
        "index_url": None if index_url is None else check.url("index_url", index_url),
        "extra_index_urls": check.urls("extra_index_urls", extra_index_urls),
        "pre": bool(pre),
        "extra_args": _optional_text("extra_args", extra_args),
        "secret_mounts": normalize_secrets(secret_mounts),
    }
