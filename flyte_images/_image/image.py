"""`Image`: an immutable description of a container image, built up one layer at a time.

Images start from a constructor (`Image(...)` itself is refused). Every `with_*` returns a new
Image and reads nothing from disk until the identifier, `validate()` or a build needs it, so
defining an image never fails because a file is missing. `from_base`, `from_ref_name` and
`from_debian_base()` with a released flyte (the SDK's published image) are references to an
existing image, never built, until a layer is added or they are cloned (then they need a name).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import _config
from .._errors import InvalidLayerArgument, LayerNotAllowedError, SourceNotFoundError
from .._files.sources import Sources
from .._files.statcache import shared_stat_cache
from .._formats import validation as check
from .._formats.validation import Architecture
from . import args
from .args import DEFAULT_FLYTE_VERSION, DEFAULT_IMAGE_NAME, DEFAULT_PLATFORMS, default_base_image, optional_registry
from .identity import Identified, identify, identify_dockerfile, repository_of
from .layers.base import Layer
from .layers.code import CodeBundle, CopyStyle, resolve_code_bundle_layer
from .layers.files import DockerIgnore, SourceFile, SourceFolder
from .layers.system import AptPackages, Commands, DebianBase, Env, WorkDir
from .packages import PackageMethods
from .secret import Secret, SecretRequest, normalize_secrets

__all__ = ["Image", "resolve_code_bundle_layer"]

_construction = threading.local()


@dataclass(frozen=True)
class Image(PackageMethods):
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
        """The Flyte SDK's default image: Debian with the requested Python in /opt/venv on PATH,
        the non-root `flyte` user, WORKDIR /home/flyte, PYTHONPATH=/root.

        With `install_flyte` (the default) and a released `flyte_version` (default the pinned
        DEFAULT_FLYTE_VERSION) it is the SDK's published image `ghcr.io/flyteorg/flyte:py3.X-vV`:
        a reference, never built; layers added to it (or a `name`/`registry`, as in the SDK)
        make an image built FROM it. Otherwise it is built on `python:X.Y-slim-bookworm` (or
        FLYTE_IMAGES_BASE_IMAGE, for mirrors), with `flyte==V` installed for an unreleased V.
        `python_version` accepts (3, 12) or "3.12" and defaults to this interpreter's version.
        The platform defaults to ("linux/amd64",).

        Example:
            Image.from_debian_base(python_version=(3, 12)).with_pip_packages("numpy")
            Image.from_debian_base(python_version=(3, 12), install_flyte=False)
        """
        version = check.host_python_version() if python_version is None else check.python_version(python_version)
        if flyte_version is not None:
            check.nonempty("flyte_version", flyte_version)
        pinned = (flyte_version or DEFAULT_FLYTE_VERSION).strip() if install_flyte else None
        published = pinned is not None and args.is_released(pinned)
        return cls._new(
            base_image=args.published_image(version, pinned) if published and pinned else default_base_image(version),
            registry=optional_registry(registry),
            name=check.repository_name("name", name) if name is not None else DEFAULT_IMAGE_NAME,
            platform=check.platforms(platform) if platform is not None else DEFAULT_PLATFORMS,
            python_version=version,
            extendable=True,
            # The published image is used as is unless a name or registry is given (the SDK then
            # clones it: an image of its own, built FROM the published one).
            _is_cloned=not published or bool(registry or name),
            _layers=(DebianBase(install_flyte=bool(install_flyte), flyte_version=pinned, published=published),),
            _image_registry_secret=args.registry_secret(registry_secret),
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
            registry=optional_registry(registry),
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
        from .layers.python import UVScript

        layer = UVScript(
            script=check.local_path("script", script),
            **args.install_options(index_url, extra_index_urls, pre, extra_args, secret_mounts),
        )
        name = check.repository_name("name", name)
        base = cls.from_debian_base(python_version, None, False, registry, registry_secret, name, platform)
        return base._with_layer(layer)

    @classmethod
    def from_pixi_script(
        cls,
        script: Path | str,
        *,
        name: str,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        environment: str = "default",
        extra_args: str | None = None,
        platform: tuple[Architecture, ...] | None = None,
        secret_mounts: SecretRequest | None = None,
    ) -> Image:
        """An image with the pixi environment (conda and PyPI packages) that a pixi script's
        `# /// script` block declares (`[tool.pixi.*]` tables); a `<script>.pixi.lock` beside it
        is used with --locked. List `flyte` in its dependencies: it is not installed for you.
        Building needs conda channels and pixi's image (ghcr.io/prefix-dev/pixi).

        Example:
            Image.from_pixi_script("gdal_task.py", name="gdal")
        """
        from .layers.pixi import PixiScript, conda_subdirs, environment_name

        base = cls.from_debian_base(None, None, False, registry, registry_secret, name, platform)
        layer = PixiScript(
            script=check.local_path("script", script),
            platforms=conda_subdirs(base.platform),
            environment=environment_name(environment),
            extra_args=args.optional_text("extra_args", extra_args),
            secret_mounts=normalize_secrets(secret_mounts),
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
        if addl_layer is not None and not self.extendable:
            raise LayerNotAllowedError(
                "cannot add addl_layer to a non-extendable image; create it with extendable=True in an "
                "earlier clone() call (e.g. image.clone(name='app', extendable=True)), or use a with_* method"
            )
        given: dict[str, tuple[Any, Callable[[Any], Any]]] = {
            "registry": (registry, optional_registry),
            "_image_registry_secret": (registry_secret, args.registry_secret),
            "name": (name, lambda v: check.repository_name("name", v)),
            "base_image": (base_image, lambda v: check.image_reference("base_image", v)),
            "python_version": (python_version, check.python_version),
            "extendable": (extendable, bool),
            "platform": (platform, check.platforms),
        }
        changes = {key: normalise(value) for key, (value, normalise) in given.items() if value is not None}
        image = self._replace(_is_cloned=True, **changes)
        return image._with_layer(addl_layer) if addl_layer is not None else image

    def _with_layer(self, layer: Layer) -> Image:
        if not isinstance(layer, Layer):
            raise check.wrong_type("addl_layer", "a layer", layer)
        if self.dockerfile is not None:
            raise LayerNotAllowedError(
                f"cannot add a {layer.KIND} layer to the Dockerfile-based image {self.name!r}: "
                f"put that step into {self.dockerfile} instead"
            )
        return self._replace(_layers=(*self._layers, layer), _is_cloned=True)

    # ----- layers -------------------------------------------------------------------------

    def with_workdir(self, workdir: str) -> Image:
        """Set the working directory (WORKDIR) for the layers after it and for the container."""
        return self._with_layer(WorkDir(workdir=check.nonempty("workdir", workdir)))

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        """Set environment variables in the image (one ENV instruction).

        Example: `image.with_env_vars({"HF_HOME": "/cache/hf"})`
        """
        if not isinstance(env_vars, dict):
            raise check.wrong_type("env_vars", "a dict of str to str", env_vars)
        if not env_vars:
            raise InvalidLayerArgument("env_vars", "expected a non-empty dict of str to str, got {}")
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

    def with_code_bundle(self, copy_style: CopyStyle = "loaded_modules", dst: str = ".") -> Image:
        """Bake the project's code into the image when a deploy runs with copy_style="none"
        ("loaded_modules": the files of the modules imported from the project root; "all": the
        whole root, ignore rules applied), copied to `dst`. With any other copy style the code
        travels with the run and this layer does nothing (see `resolve_code_bundle_layer`).

        Example: `image.with_code_bundle(copy_style="all", dst="/app")`
        """
        return self._with_layer(CodeBundle(copy_style=args.copy_style(copy_style), dst=check.nonempty("dst", dst)))

    def with_dockerignore(self, path: Path) -> Image:
        """Use this .dockerignore for every folder the image copies (paths relative to its folder)."""
        return self._with_layer(DockerIgnore(path=check.local_path("path", path)))

    def with_apt_packages(self, *packages: str, secret_mounts: SecretRequest | None = None) -> Image:
        """Install Debian packages with apt-get (sorted: order does not matter)."""
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
        """True for an existing image used as is (never built): `from_base`, `from_ref_name`,
        and the published default image of `from_debian_base`, until a layer is added."""
        own = [layer for layer in self._layers if not (isinstance(layer, DebianBase) and layer.published)]
        return not self._is_cloned and not own and self.dockerfile is None

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
        return self._identified(Sources(cache=shared_stat_cache())).identifier

    @property
    def uri(self) -> str:
        """`registry/name:identifier` (`name:identifier` with no registry); for a reference
        image, the image it refers to."""
        if self.is_reference:
            resolved = self.resolved_base_image()
            assert resolved is not None
            return resolved
        return f"{self._repository()}:{self.identifier}"

    def _repository(self) -> str:
        return repository_of(self.name, self.registry, self.resolved_base_image())

    def _identified(self, sources: Sources) -> Identified:
        """The identity of this image (not a reference) from one read of its files."""
        if self.is_reference:
            raise LayerNotAllowedError(
                f"{self.uri} is an existing image used as is; there is nothing to build "
                "(add a layer or clone(name=...) to build on top of it)"
            )
        if self.dockerfile is None:
            return identify(self.resolved_base_image(), self.python_version, self.platform, self._layers, sources)
        return identify_dockerfile(self.dockerfile, self.python_version, self.platform, sources)
