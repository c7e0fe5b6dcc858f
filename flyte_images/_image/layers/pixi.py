"""Layers that install a pixi environment (conda and PyPI packages), as the Flyte SDK renders them:
a pixi project (`with_pixi_project`) and a pixi script (`from_pixi_script`).

The pinned pixi binary is bind-mounted from pixi's image into the install step only. Unlike
every other layer, `pixi install` needs conda channels at build time. Every pixi layer uses
/opt/pixi-project (a later manifest updates the same environment), whose environment becomes
the image's (VIRTUAL_ENV, UV_PYTHON, PATH), so later pip layers install into it. A pixi script
is lowered to the `pixi.toml` its PEP 723 block describes (pixi has no `install --script`); the
identifier covers that manifest, not the script's code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..._errors import InvalidLayerArgument, SourceError
from ..._files.entries import FILE, Entry, Tree
from ..._files.sources import Sources, Staged
from ..._formats import quote as q
from ..._formats.encoding import Encodable
from ..._formats.validation import nonempty
from ..secret import Secret
from ..uvscript import block_toml
from .base import Inputs, Layer, secrets_identity, staged_file
from .python import ProjectInstallMode, default_lock

if TYPE_CHECKING:
    from ..._formats.dockerfile import Instructions

PIXI_VERSION = "0.72.2"  # the Flyte SDK's pin; a tag of pixi's image must exist for it
PIXI_IMAGE = f"ghcr.io/prefix-dev/pixi:{PIXI_VERSION}"
PIXI_PROJECT_DIR = "/opt/pixi-project"
PIXI_CACHE = "--mount=type=cache,target=/root/.cache/rattler,id=flyte-images-pixi"
PIXI_BINARY = f"--mount=type=bind,from={PIXI_IMAGE},source=/usr/local/bin/pixi,target=/usr/local/bin/pixi"
MANIFEST_NAMES = ("pixi.toml", "pyproject.toml")  # the only names pixi discovers
DEFAULT_CHANNELS = ("conda-forge",)
CONDA_SUBDIRS = {"linux/amd64": "linux-64", "linux/arm64": "linux-aarch64"}
_ENVIRONMENT = re.compile(r"^[a-z0-9-]+\Z")  # pixi's own rule for environment names
_PEP723 = re.compile(r"(?m)^# /// script\s*$\s(?P<content>(?:^#(?: .*)?$\s)*?)^# ///\s*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")


def environment_name(value: object) -> str:
    name = nonempty("environment", value).strip()
    if not _ENVIRONMENT.match(name):
        raise InvalidLayerArgument(
            "environment", f"{name!r} is not a pixi environment name; use lowercase letters, digits and '-'"
        )
    return name


def conda_subdirs(platforms: tuple[str, ...]) -> tuple[str, ...]:
    """The conda subdirs of the image's platforms (`linux/amd64` -> `linux-64`)."""
    unknown = [p for p in platforms if p not in CONDA_SUBDIRS]
    if unknown:
        raise InvalidLayerArgument(
            "platform", f"pixi environments can be built for {sorted(CONDA_SUBDIRS)} only, not {unknown}"
        )
    return tuple(CONDA_SUBDIRS[p] for p in platforms)


@dataclass(frozen=True)
class _PixiInstall(Layer):
    """Options shared by both pixi layers, and what they render alike."""

    environment: str = "default"
    extra_args: str | None = None
    secret_mounts: tuple[Secret, ...] = ()

    def _options(self) -> Encodable:
        return (PIXI_VERSION, self.environment, self.extra_args, secrets_identity(self.secret_mounts))

    def _install(self, out: Instructions, index: int, manifest_name: str, locked: bool) -> None:
        """The project files, `pixi install` (pixi mounted for it), and the environment made the
        image's (its name and the manifest name are checked words)."""
        out.add(f"COPY {q.json_words([f'_fi/{index}/', PIXI_PROJECT_DIR + '/'])}")
        manifest = f"{PIXI_PROJECT_DIR}/{manifest_name}"
        words = ["pixi", "install", "--manifest-path", manifest, "--environment", self.environment]
        # pixi refuses --locked together with --frozen: a --frozen of the user's replaces it.
        if locked and "--frozen" not in (self.extra_args or ""):
            words.append("--locked")
        words += out.split_args("extra_args", self.extra_args)
        out.run_step(q.shell_join(words), [PIXI_CACHE, PIXI_BINARY], self.secret_mounts)
        env_dir = f"{PIXI_PROJECT_DIR}/.pixi/envs/{self.environment}"
        out.add(
            f"ENV VIRTUAL_ENV={env_dir} UV_PYTHON={env_dir}/bin/python "
            f"PIXI_PROJECT_MANIFEST={manifest} PATH={env_dir}/bin:$PATH"
        )
        out.venv = True  # later pip layers install into the pixi environment (UV_PYTHON)


@dataclass(frozen=True)
class PixiProject(_PixiInstall):
    """`pixi install` of a manifest (`pixi.toml`, or `pyproject.toml` with `[tool.pixi]`), with
    `--locked` when a pixi.lock is used. install_project copies the manifest's whole folder
    (its ignore rules applied, the manifest and lock kept), else the manifest and lock only."""

    KIND: ClassVar[str] = "pixi_project"
    manifest: Path = Path("pixi.toml")  # or the project folder: the manifest is found in it
    pixi_lock: Path | None = None
    project_install_mode: ProjectInstallMode = "dependencies_only"

    def manifest_file(self) -> Path:
        """The manifest, found in a folder as pixi finds it (pixi.toml first)."""
        if self.manifest.is_dir():
            pixi_toml = self.manifest / "pixi.toml"
            return pixi_toml if pixi_toml.exists() else self.manifest / "pyproject.toml"
        if self.manifest.name not in MANIFEST_NAMES:
            raise SourceError(
                f"pixi manifest {self.manifest} must be named pixi.toml or pyproject.toml (pixi finds "
                "no other name); rename it, or pass the project folder"
            )
        return self.manifest

    def inputs(self, sources: Sources, index: int) -> Inputs:
        manifest = self.manifest_file()
        lock = default_lock(manifest, self.pixi_lock, "pixi.lock")
        dest = f"_fi/{index}"
        if self.project_install_mode == "dependencies_only":
            files = [staged_file(sources, manifest, f"{dest}/{manifest.name}", "pixi manifest")]
            if lock is not None:
                files.append(staged_file(sources, lock, f"{dest}/pixi.lock", "pixi lock file"))
            return Inputs(files=tuple(files), data=(manifest.name, lock is not None))
        folder = manifest.parent
        outside = lock is not None and lock != folder / "pixi.lock"
        keep = (manifest.name,) if outside else (manifest.name, "pixi.lock")
        tree = sources.tree(folder, dest, project=True, keep=keep, drop=("pixi.lock",) if outside else ())
        extra = (staged_file(sources, lock, f"{dest}/pixi.lock", "pixi lock file"),) if outside and lock else ()
        trees: tuple[tuple[str, str, Tree], ...] = ((f"{folder.name}/", dest, tree),)
        return Inputs(files=extra, trees=trees, data=(manifest.name, lock is not None))

    def identity(self, inputs: Inputs) -> Encodable:
        files = tuple(s.entry.identity() for _label, s in inputs.files)
        tree = inputs.trees[0][2].identity() if inputs.trees else None
        return (self.KIND, self.project_install_mode, inputs.data, files, tree, self._options())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        self._install(out, index, *inputs.data)


@dataclass(frozen=True)
class PixiScript(_PixiInstall):
    """The pixi environment of a script's PEP 723 block (`[tool.pixi.*]` tables for conda
    packages), installed from the `pixi.toml` that block lowers to; a `<script>.pixi.lock`
    beside the script (from `pixi lock --script`) is used with `--locked`. The script itself
    is not copied: tasks get their code from the code bundle, as with the original."""

    KIND: ClassVar[str] = "pixi_script"
    script: Path = Path("script.py")
    platforms: tuple[str, ...] = ("linux-64",)  # conda subdirs of the image's platforms

    def inputs(self, sources: Sources, index: int) -> Inputs:
        if self.script.suffix != ".py":
            raise SourceError(f"pixi script {self.script} must have a .py extension")
        _entry, data = Sources(cache=sources.cache).small_file(self.script, "", "pixi script")  # read, not sent
        manifest = render_manifest(data.decode("utf-8", "replace"), str(self.script), self.platforms).encode()
        digest = hashlib.sha256(manifest).hexdigest()
        dest = f"_fi/{index}/pixi.toml"
        if sources.snap is not None:
            sources.snap.put_bytes(dest, manifest, 0o644, digest)
        files = [("pixi.toml", Staged(dest, Entry("pixi.toml", FILE, 0o644, digest, len(manifest))))]
        lock = self.script.with_name(f"{self.script.name}.pixi.lock")
        locked = lock.is_file()
        if locked:
            files.append(staged_file(sources, lock, f"_fi/{index}/pixi.lock", "pixi lock file"))
        return Inputs(files=tuple(files), data=locked)

    def identity(self, inputs: Inputs) -> Encodable:
        files = tuple(s.entry.identity() for _label, s in inputs.files)
        return (self.KIND, files, self._options())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        self._install(out, index, "pixi.toml", inputs.data)


# ----- a pixi script's block, lowered to a manifest ------------------------------------------


def _pypi_entry(requirement: str, origin: str) -> tuple[str, Any]:
    """One PEP 508 requirement as a `[pypi-dependencies]` entry of pixi."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement as exc:
        raise SourceError(f"{origin}: {requirement!r} is not a valid requirement: {exc}") from exc
    if req.marker is not None:
        raise SourceError(
            f"{origin}: environment markers are not supported in pixi script dependencies ({requirement!r}); "
            "use a [tool.pixi.target.<platform>.pypi-dependencies] table instead"
        )
    spec: dict[str, Any] = {}
    if req.url:
        if req.url.startswith("git+"):
            url, _, rev = req.url[len("git+") :].partition("@")
            spec["git"] = url
            if rev:
                spec["rev"] = rev
        else:
            spec["url"] = req.url
    else:
        spec["version"] = str(req.specifier) or "*"
    if req.extras:
        spec["extras"] = sorted(req.extras)
    return req.name, spec["version"] if set(spec) == {"version"} else spec


def render_manifest(text: str, origin: str, subdirs: tuple[str, ...]) -> str:
    """The `pixi.toml` a pixi script's block describes, as the Flyte SDK lowers it: channels
    default to conda-forge and platforms to the image's (the script's own win), requires-python
    becomes the `python` conda dependency, `dependencies` the PyPI ones; other [tool.pixi.*]
    tables pass through. Raises SourceError when the script's platforms miss one of the image's."""
    match = _PEP723.search(text)
    if match is None:
        raise SourceError(
            f"{origin} has no '# /// script' block; a pixi script declares its dependencies in one "
            "(see https://pixi.prefix.dev/latest/python/scripts/)"
        )
    data = block_toml(match.group("content"), origin)
    pixi = dict(data.get("tool", {}).get("pixi", {}))
    workspace = dict(pixi.get("workspace", {}))
    declared = workspace.get("platforms")
    if declared:
        missing = [p for p in subdirs if p not in declared]
        if missing:
            raise SourceError(
                f"{origin} declares platforms {list(declared)} under [tool.pixi.workspace], which do not cover "
                f"{missing} that this image is built for; add them, or pass platform=(...) to from_pixi_script"
            )
    workspace.setdefault("channels", list(DEFAULT_CHANNELS))
    workspace["platforms"] = list(declared) if declared else list(subdirs)
    dependencies = dict(pixi.get("dependencies", {}))
    if data.get("requires-python") and "python" not in dependencies:
        dependencies["python"] = data["requires-python"]
    pypi = dict(pixi.get("pypi-dependencies", {}))
    for requirement in data.get("dependencies", []):
        name, spec = _pypi_entry(str(requirement), origin)
        pypi.setdefault(name, spec)
    manifest: dict[str, Any] = {"workspace": workspace}
    if dependencies:
        manifest["dependencies"] = dependencies
    if pypi:
        manifest["pypi-dependencies"] = pypi
    manifest.update({k: v for k, v in pixi.items() if k not in ("workspace", "dependencies", "pypi-dependencies")})
    header = "# Generated by flyte-images from the '# /// script' block of a pixi script; edit the script.\n"
    return header + toml_text(manifest)


def toml_text(tables: Mapping[str, Any]) -> str:
    """TOML for a mapping of top-level tables (nested tables written inline): a writer for the
    values `tomllib` reads, so a manifest says what the script's block said."""
    out = []
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            out.append(f"{_key(name)} = {_value(table)}\n")
    for name, table in tables.items():
        if isinstance(table, Mapping):
            out.append(f"\n[{_key(name)}]\n")
            out += [f"{_key(k)} = {_value(v)}\n" for k, v in table.items()]
    return "".join(out)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    # JSON escapes are TOML basic-string escapes; DEL is the one control JSON leaves raw.
    return json.dumps(text, ensure_ascii=True).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value.isoformat())  # dates and times, as tomllib returns them
