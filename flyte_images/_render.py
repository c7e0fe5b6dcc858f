"""Image -> Dockerfile text and a plan of the build context. Pure: no Docker, no network.

Each layer renders to its own instruction(s). Files a layer needs go under `_fi/<n>/` in the
context (n = the layer's position), from the same walk that computed the identifier.
Package installs run through uv with a shared cache mount, apt with locked cache mounts for
its archives and lists; requirement files, lock files and wheels are bind-mounted for the one
RUN that reads them, so they are not left in the image. Secrets are mounted only into the RUN
of the layer that asks for them. With `RenderOptions(ca_bundle=True)` every RUN that may
download gets the build secret `flyte-images-ca` mounted and uv, pip, curl, requests and apt
pointed at it; it is never copied into the image. The renderer emits no `# syntax=` line (it
would pull a frontend image) and only Dockerfile features of BuildKit's built-in frontend.

Heavy ML packages named in one pip layer (see `HEAVY`) are installed by an earlier RUN of their
own, so changing a light package in the same layer does not download torch again.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import _quote as q
from ._errors import InvalidLayerArgument, LayerNotAllowedError
from ._files import Tree
from ._identity import source_context
from ._image import Image
from ._layers import (
    AptPackages,
    Commands,
    DebianBase,
    DockerIgnore,
    Env,
    Layer,
    PipPackages,
    PoetryProject,
    PythonWheels,
    Requirements,
    SourceFile,
    SourceFolder,
    UVProject,
    UVScript,
    WorkDir,
    _PythonInstall,
)
from ._secret import Secret
from ._sources import SourceContext, folder_entries, requirement_files, single_file
from ._statcache import StatCache
from ._uvscript import read_script_metadata

POETRY_VERSION = "2.2.1"
CA_SECRET_ID = "flyte-images-ca"
CA_PATH = f"/run/secrets/{CA_SECRET_ID}"
WORK = "/tmp/flyte-images"  # bind mounts and scratch space, never part of an image layer

HEAVY_NAMES = frozenset(
    {
        "torch", "torchvision", "torchaudio", "tensorflow", "tensorflow-cpu", "tensorflow-gpu",
        "tf-nightly", "jax", "jaxlib", "triton", "xformers", "flash-attn", "vllm", "cupy",
        "paddlepaddle", "paddlepaddle-gpu", "mxnet", "onnxruntime-gpu", "deepspeed", "tensorrt",
    }
)  # fmt: skip
HEAVY_PREFIXES = ("nvidia-", "cupy-cuda", "jax-cuda", "tensorrt-")

_UV_CACHE = "--mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv"
_POETRY_CACHE = "--mount=type=cache,target=/root/.cache/pypoetry,id=flyte-images-poetry"
_APT_CACHE = (
    "--mount=type=cache,target=/var/cache/apt,sharing=locked,id=flyte-images-apt-archives",
    "--mount=type=cache,target=/var/lib/apt/lists,sharing=locked,id=flyte-images-apt-lists",
)
_SCRATCH = f"--mount=type=tmpfs,target={WORK}/scratch"
_CA_EXPORTS = f"export SSL_CERT_FILE={CA_PATH} REQUESTS_CA_BUNDLE={CA_PATH} PIP_CERT={CA_PATH} CURL_CA_BUNDLE={CA_PATH}"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class RenderOptions:
    """Build-time choices that change the Dockerfile but not the image's contents or tag."""

    ca_bundle: bool = False


@dataclass(frozen=True)
class ContextItem:
    """One file or folder to stage at `dest` (relative, '/'-separated) in the context."""

    dest: str
    source: Path
    tree: Tree | None = None  # a folder: exactly these entries
    digest: str = ""  # a file: the SHA-256 it had when the identifier was computed


@dataclass(frozen=True)
class Rendered:
    dockerfile: str
    items: tuple[ContextItem, ...] = ()
    secrets: tuple[Secret, ...] = ()
    uv_platforms: tuple[str, ...] = ()
    context_dir: Path | None = None  # from_dockerfile: the user's own folder is the context


def is_heavy(requirement: str) -> bool:
    """Whether a requirement names a heavy ML package (by its normalised project name)."""
    if "://" in requirement.split("@", 1)[0]:
        return False
    match = _NAME.match(requirement)
    if not match:
        return False
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name in HEAVY_NAMES or name.startswith(HEAVY_PREFIXES)


def render(image: Image, options: RenderOptions | None = None, cache: StatCache | None = None) -> Rendered:
    """The Dockerfile and context plan of `image`. Reads the files the image names."""
    if image.is_reference:
        raise LayerNotAllowedError(
            f"{image.uri} is an existing image used as is; there is nothing to build "
            "(add a layer or clone(name=...) to build on top of it)"
        )
    if image.dockerfile is not None:
        single_file(image.dockerfile, SourceContext(cache=cache), "Dockerfile")  # exists, is a file
        return Rendered(dockerfile=image.dockerfile.read_text(encoding="utf-8"), context_dir=image.dockerfile.parent)
    return _Renderer(image, options or RenderOptions(), source_context(image, cache)).run()


@dataclass
class _Renderer:
    image: Image
    options: RenderOptions
    ctx: SourceContext
    lines: list[str] = field(default_factory=list)
    items: list[ContextItem] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    has_uv: bool = False
    venv: bool = False

    def run(self) -> Rendered:
        layers = self.image._layers
        if not (layers and isinstance(layers[0], DebianBase)):
            base = self.image.resolved_base_image()
            if not base or any(ch.isspace() for ch in base):
                raise InvalidLayerArgument("base_image", f"{base!r} is not an image reference")
            self.lines += [f"FROM {base}", "ARG TARGETARCH"]
        for index, layer in enumerate(layers):
            self.layer(index, layer)
        needs_uv = self.has_uv
        return Rendered(
            dockerfile="\n".join(self.lines) + "\n",
            items=tuple(self.items),
            secrets=tuple(self.secrets),
            uv_platforms=tuple(self.image.platform) if needs_uv else (),
        )

    # ----- helpers ------------------------------------------------------------------------

    def run_step(
        self, script: str, mounts: list[str], secrets: tuple[Secret, ...] = (), downloads: bool = True
    ) -> None:
        prelude: list[str] = []
        if downloads and self.options.ca_bundle:
            mounts = [*mounts, f"--mount=type=secret,id={CA_SECRET_ID},target={CA_PATH}"]
            prelude.append(_CA_EXPORTS)
        for secret in secrets:
            if secret not in self.secrets:
                self.secrets.append(secret)
            target = secret.mount.as_posix() if secret.mount else f"/run/secrets/{secret.build_id}"
            mounts = [*mounts, f"--mount=type=secret,id={secret.build_id},target={target}"]
            if secret.mount is None:
                name = secret.as_env_var or secret.source_env_var
                # A plain assignment has the status of its command substitution; `export` has not.
                prelude.append(f'{name}="$(cat {target})" && export {name}')
        # The prelude stops the step if it fails; the script then runs exactly as written.
        full = f"{' && '.join(prelude)} || exit 1\n{script}" if prelude else script
        self.lines.append("RUN " + " \\\n    ".join([*mounts, q.exec_form(full)]))

    def ensure_uv(self) -> None:
        if not self.has_uv:
            self.lines.append('COPY ["_fi/uv/${TARGETARCH}/uv", "/usr/local/bin/uv"]')
            self.has_uv = True

    def uv_install(self, layer: _PythonInstall | None, args: list[str], *, with_extra_args: bool = True) -> str:
        """`uv pip install` into the image's environment with the layer's index options."""
        words = ["uv", "pip", "install"]
        if not self.venv:
            words = [
                "UV_LINK_MODE=copy",
                "UV_PYTHON_DOWNLOADS=never",
                *words,
                "--system",
                "--break-system-packages",
            ]
        if layer is not None:
            if layer.index_url:
                words += ["--index-url", q.shell_expanding(layer.index_url)]
            for url in layer.extra_index_urls:
                words += ["--extra-index-url", q.shell_expanding(url)]
            if layer.pre:
                words.append("--prerelease=allow")
            if with_extra_args:
                words += split_args("extra_args", layer.extra_args)
        return q.shell_join([*words, *args])

    def stage_file(self, dest: str, path: Path, what: str) -> None:
        entry = single_file(path, self.ctx, what)
        self.items.append(ContextItem(dest=dest, source=path, digest=entry.digest))

    def stage_tree(self, dest: str, folder: Path) -> None:
        self.items.append(ContextItem(dest=dest, source=folder, tree=folder_entries(folder, self.ctx)))

    def bind(self, index: int, rw: bool = False) -> str:
        return f"--mount=type=bind,source=_fi/{index},target={WORK}/{index}" + (",rw" if rw else "")

    # ----- layers -------------------------------------------------------------------------

    def layer(self, index: int, layer: Layer) -> None:
        handler = getattr(self, f"render_{layer.KIND}", None)
        if handler is None:
            raise LayerNotAllowedError(f"this renderer cannot render a {layer.KIND} layer")
        handler(index, layer)

    def render_debian_base(self, index: int, layer: DebianBase) -> None:
        if index != 0:
            raise LayerNotAllowedError("the Debian base environment must be the first layer")
        version = self.image.python_version
        assert version is not None
        template = (resources.files("flyte_images") / "dockerfiles" / "debian-base.Dockerfile").read_text()
        body = [line for line in template.splitlines() if not line.startswith("#")]
        text = "\n".join(body).replace("{base_image}", self.image.base_image or "")
        self.lines += text.replace("{python_version}", f"{version[0]}.{version[1]}").splitlines()
        self.has_uv = self.venv = True
        if layer.install_flyte:
            spec = f"flyte=={layer.flyte_version}" if layer.flyte_version else "flyte"
            self.run_step(self.uv_install(None, [q.shell_word(spec)]), [_UV_CACHE])

    def render_apt(self, index: int, layer: AptPackages) -> None:
        ca = f" -o Acquire::https::CAInfo={CA_PATH}" if self.options.ca_bundle else ""
        names = q.shell_join(q.shell_word(p) for p in layer.packages)
        script = (
            "rm -f /etc/apt/apt.conf.d/docker-clean"
            f" && apt-get update -q{ca}"
            f" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends{ca} {names}"
        )
        self.run_step(script, list(_APT_CACHE), layer.secret_mounts)

    def render_pip(self, index: int, layer: PipPackages) -> None:
        self.ensure_uv()
        heavy = [p for p in layer.packages if is_heavy(p)]
        light = [p for p in layer.packages if not is_heavy(p)]
        for group in (heavy, light):
            if group:
                args = [q.shell_expanding(p) for p in group]
                self.run_step(self.uv_install(layer, args), [_UV_CACHE], layer.secret_mounts)

    def render_requirements(self, index: int, layer: Requirements) -> None:
        self.ensure_uv()
        files = requirement_files(layer.file)
        common = Path(os.path.commonpath([str(p.parent) for p in files]))
        for path in files:
            self.stage_file(f"_fi/{index}/{path.relative_to(common).as_posix()}", path, "requirements file")
        main = f"{WORK}/{index}/{layer.file.relative_to(common).as_posix()}"
        script = self.uv_install(layer, ["-r", q.shell_word(main)])
        self.run_step(script, [_UV_CACHE, self.bind(index)], layer.secret_mounts)

    def _locked_export(self, index: int, command: str) -> str:
        return f"cd {WORK}/{index} && {command} --output-file {WORK}/scratch/requirements.txt"

    def render_uv_project(self, index: int, layer: UVProject) -> None:
        self.ensure_uv()
        self.stage_file(f"_fi/{index}/pyproject.toml", layer.pyproject, "pyproject file")
        self.stage_file(f"_fi/{index}/uv.lock", layer.uvlock, "uv.lock file")
        export = q.shell_join(
            [
                *("uv", "export", "--frozen", "--no-emit-project", "--format", "requirements-txt"),
                *split_args("extra_args", layer.extra_args),
            ]
        )
        # extra_args belong to `uv export` (like `uv sync` in the original: --extra, --group, ...)
        install = self.uv_install(layer, ["-r", f"{WORK}/scratch/requirements.txt"], with_extra_args=False)
        script = f"{self._locked_export(index, export)} && {install}"
        self.run_step(script, [_UV_CACHE, self.bind(index), _SCRATCH], layer.secret_mounts)
        if layer.project_install_mode == "install_project":
            self.project_install(index, layer.pyproject.parent, layer.secret_mounts)

    def project_install(self, index: int, folder: Path, secrets: tuple[Secret, ...]) -> None:
        self.stage_tree(f"_fi/{index}p", folder)
        mount = f"--mount=type=bind,source=_fi/{index}p,target={WORK}/{index}p,rw"
        script = self.uv_install(None, ["--no-deps", f"{WORK}/{index}p"])
        self.run_step(script, [_UV_CACHE, mount], secrets)

    def render_poetry_project(self, index: int, layer: PoetryProject) -> None:
        self.ensure_uv()
        self.stage_file(f"_fi/{index}/pyproject.toml", layer.pyproject, "pyproject file")
        self.stage_file(f"_fi/{index}/poetry.lock", layer.poetry_lock, "poetry.lock file")
        poetry = ["uv", "tool", "run", "--from", f"poetry=={POETRY_VERSION}", "poetry", "install"]
        args = ["--no-interaction", "--no-root", *split_args("extra_args", layer.extra_args)]
        env = "POETRY_VIRTUALENVS_CREATE=false UV_PYTHON_DOWNLOADS=never"
        script = f"cd {WORK}/{index} && {env} {q.shell_join(poetry + args)}"
        self.run_step(script, [_UV_CACHE, _POETRY_CACHE, self.bind(index, rw=True)], layer.secret_mounts)
        if layer.project_install_mode == "install_project":
            self.project_install(index, layer.pyproject.parent, layer.secret_mounts)

    def render_uv_script(self, index: int, layer: UVScript) -> None:
        self.ensure_uv()
        metadata = read_script_metadata(layer.script)
        if metadata.dependencies:
            args = [q.shell_expanding(d) for d in metadata.dependencies]
            self.run_step(self.uv_install(layer, args), [_UV_CACHE], layer.secret_mounts)
        self.stage_file(f"_fi/{index}/{layer.script.name}", layer.script, "uv script")
        self.lines.append(f"COPY {q.json_words([f'_fi/{index}/{layer.script.name}', './'])}")

    def render_python_wheels(self, index: int, layer: PythonWheels) -> None:
        self.ensure_uv()
        for wheel in layer.wheels():
            self.stage_file(f"_fi/{index}/{wheel.name}", wheel, "wheel")
        if layer.package_name:
            args = ["--find-links", f"{WORK}/{index}", q.shell_word(layer.package_name)]
        else:
            args = [q.shell_word(f"{WORK}/{index}/{w.name}") for w in layer.wheels()]
        self.run_step(self.uv_install(None, args), [_UV_CACHE, self.bind(index)])

    def render_env(self, index: int, layer: Env) -> None:
        self.lines.append("ENV " + " ".join(f"{k}={q.dockerfile_dq(v)}" for k, v in layer.env_vars))

    def render_workdir(self, index: int, layer: WorkDir) -> None:
        self.lines.append(f"WORKDIR {q.dockerfile_dq(layer.workdir)}")

    def render_commands(self, index: int, layer: Commands) -> None:
        for command in layer.commands:
            self.run_step(command, [], layer.secret_mounts)

    def render_source_file(self, index: int, layer: SourceFile) -> None:
        self.stage_file(f"_fi/{index}/{layer.src.name}", layer.src, "source file")
        dest = layer.dst if layer.dst.endswith("/") else layer.dst + "/"
        self.lines.append(f"COPY {q.json_words([f'_fi/{index}/{layer.src.name}', dest])}")

    def render_source_folder(self, index: int, layer: SourceFolder) -> None:
        name = layer.target_name
        source = f"_fi/{index}/{name or 'contents'}"
        self.stage_tree(source, layer.src)
        dest = posixpath.join(layer.dst, name) if name else layer.dst
        self.lines.append(f"COPY {q.json_words([source, dest.rstrip('/') + '/'])}")

    def render_dockerignore(self, index: int, layer: DockerIgnore) -> None:
        """Nothing to render: the rules shaped the file lists of the copy layers."""


def split_args(parameter: str, text: str | None) -> list[str]:
    """Split user arguments like a shell would, and quote each so none can run a command."""
    if not text:
        return []
    try:
        return [q.shell_word(arg) for arg in shlex.split(text)]
    except ValueError as exc:
        raise InvalidLayerArgument(parameter, f"{text!r} cannot be split into arguments: {exc}") from exc
