"""Layers that install Python packages: pip packages, requirement files, uv and poetry projects,
uv scripts and local wheels. All install through uv (pinned, see `_uvbin`), which their steps
mount and the image does not keep (`UVBinary` puts it in the image)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from ..._config import _tomllib
from ..._errors import SourceError, SourceNotFoundError
from ..._files.entries import Entry, Tree
from ..._files.sources import Sources, Staged, includes, relative_to_first
from ..._formats import quote as q
from ..._formats.encoding import Encodable
from ..secret import Secret
from .base import POETRY_VERSION, Inputs, Layer, index_identity, secrets_identity, staged_file

if TYPE_CHECKING:
    from ..._formats.dockerfile import Instructions
    from ..uvscript import ScriptMetadata

ProjectInstallMode = Literal["dependencies_only", "install_project"]


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
            index_identity(self.index_url),
            tuple(index_identity(u) for u in self.extra_index_urls),
            self.pre,
            self.extra_args,
            secrets_identity(self.secret_mounts),
        )


@dataclass(frozen=True)
class PipPackages(_PythonInstall):
    """Heavy ML packages (see `is_heavy`) get an earlier RUN of their own, so changing
    a light package in the same layer does not download torch again."""

    KIND: ClassVar[str] = "pip"
    packages: tuple[str, ...] = ()

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.packages, self._install_options())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        from ..._formats.dockerfile import is_heavy

        heavy = [p for p in self.packages if is_heavy(p)]
        light = [p for p in self.packages if not is_heavy(p)]
        for group in (heavy, light):
            if group:
                args = [q.shell_expanding(p) for p in group]
                out.run_step(out.uv_install(self, args), [out.UV_CACHE], self.secret_mounts)


@dataclass(frozen=True)
class Requirements(_PythonInstall):
    """A requirements file and every file it includes with -r/-c, bind-mounted for the one RUN
    that installs them (never left in the image)."""

    KIND: ClassVar[str] = "requirements"
    file: Path = Path("requirements.txt")

    def inputs(self, sources: Sources, index: int) -> Inputs:
        reader = Sources(cache=sources.cache)  # read whole first: the layout needs every include
        found: dict[Path, tuple[Entry, bytes]] = {}
        pending = [self.file]
        while pending:
            current = pending.pop(0)
            if current not in found:
                what = "requirements file" if current == self.file else f"file included by {self.file.name}"
                found[current] = reader.small_file(current, "", what)
                pending += includes(found[current][1].decode("utf-8", "replace"), current)
        common = Path(os.path.commonpath([str(p.parent) for p in found]))
        staged = []
        for rel, (path, (entry, data)) in zip(relative_to_first(list(found)), found.items(), strict=True):
            dest = f"_fi/{index}/{path.relative_to(common).as_posix()}"
            if sources.snap is not None:
                sources.snap.put_bytes(dest, data, entry.mode, entry.digest)
            staged.append((rel, Staged(dest, entry)))
        return Inputs(files=tuple(staged), data=self.file.relative_to(common).as_posix())

    def identity(self, inputs: Inputs) -> Encodable:
        files = tuple((label, *s.entry.identity()[1:]) for label, s in inputs.files)
        return (self.KIND, files, self._install_options())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        script = out.uv_install(self, ["-r", q.shell_word(f"{out.WORK}/{index}/{inputs.data}")])
        out.run_step(script, [out.UV_CACHE, out.bind(index)], self.secret_mounts)


def _project_tree(sources: Sources, index: int, pyproject: Path, lock_name: str) -> tuple[str, str, Tree]:
    """The project folder of install_project, at `_fi/<n>p`, its pyproject and lock kept whatever
    the ignore rules say (the install needs them; the Flyte SDK copies them back the same way)."""
    folder = pyproject.parent
    tree = sources.tree(folder, f"_fi/{index}p", project=True, keep=(pyproject.name, lock_name))
    return f"{folder.name}/", f"_fi/{index}p", tree


def default_lock(pyproject: Path, lock: Path | None, name: str) -> Path | None:
    """The lock file a project layer uses: the one given, else `name` beside the pyproject when
    it exists (looked at when the image is planned, not when it is defined)."""
    if lock is not None:
        return lock
    beside = pyproject.parent / name
    return beside if beside.is_file() else None


def _project_identity(inputs: Inputs) -> Encodable:
    # The files read for the dependencies step always count (a lock given from elsewhere is
    # not in the project folder), and with install_project the folder too.
    files = tuple(s.entry.identity() for _label, s in inputs.files)
    return (files, inputs.trees[0][2].identity()) if inputs.trees else files


@dataclass(frozen=True)
class _UVLayout:
    """Where a uv project's files sit in its `_fi/<n>/` folder: the project folder at `project`
    ("" : at the top) and each local path source at its own path relative to it ('/'-separated,
    `../` allowed), so every relative path of pyproject.toml and uv.lock finds in the build the
    files it names on the host."""

    locked: bool
    project: str = ""
    sources: tuple[str, ...] = ()


def _path_entries(data: bytes, origin: Path) -> list[str]:
    """The `path` values of `[tool.uv.sources]` (a table per package, or a list of them with
    markers). Only a text that mentions `sources` is parsed: a plain project costs no parse."""
    if b"sources" not in data:
        return []
    tomllib = _tomllib()
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SourceError(f"{origin} is not valid TOML ({exc}); fix it (uv refuses it too)") from exc
    table: object = parsed
    for key in ("tool", "uv", "sources"):
        table = table.get(key) if isinstance(table, dict) else None
    found = []
    for spec in table.values() if isinstance(table, dict) else ():
        for option in spec if isinstance(spec, list) else [spec]:
            if isinstance(option, dict) and isinstance(option.get("path"), str):
                found.append(option["path"])
    return found


def local_sources(pyproject: Path, data: bytes, reader: Sources) -> list[Path]:
    """Every local path a uv project installs from: its `[tool.uv.sources]` paths, and theirs in
    turn (uv honours the sources of a path dependency), as normalised absolute paths."""
    found: dict[Path, None] = {}
    pending = [(pyproject, data)]
    while pending:
        origin, text = pending.pop(0)
        for given in _path_entries(text, origin):
            if os.path.isabs(given):
                raise SourceError(
                    f"{origin} names the path source {given} by an absolute path, which does not exist inside the "
                    f'build; write it relative to {origin.parent} (e.g. path = "../libs/dep")'
                )
            path = Path(os.path.normpath(os.path.join(os.path.abspath(origin.parent), given)))
            if path in found:
                continue
            if not path.exists():
                raise SourceNotFoundError(f"path source {given} of {origin} does not exist ({path})")
            found[path] = None
            if (path / "pyproject.toml").is_file():
                _entry, more = reader.small_file(path / "pyproject.toml", "", f"pyproject file of path source {given}")
                pending.append((path / "pyproject.toml", more))
    return list(found)


def _layout(pyproject: Path, paths: list[Path], locked: bool) -> tuple[_UVLayout, list[tuple[str, Path, str]]]:
    """The layout of a project with these path sources, and for each source (in the layout's
    order) its path relative to the project, its host path and its path below `_fi/<n>/`."""
    project = Path(os.path.abspath(pyproject.parent))
    ordered = sorted((Path(os.path.relpath(p, project)).as_posix(), p) for p in paths)
    rels = [rel for rel, _path in ordered]
    for rel in rels:
        if set(rel.split("/")) <= {".", ".."}:
            raise SourceError(
                f"the path source {rel} of {pyproject} holds the project itself; a project cannot install "
                "its own folder as a dependency (use project_install_mode='install_project')"
            )
    root = Path(os.path.commonpath([project, *paths]))
    inside = project.relative_to(root).as_posix()
    placed = [(rel, path, Path(os.path.relpath(path, root)).as_posix()) for rel, path in ordered]
    return _UVLayout(locked, "" if inside == "." else inside, tuple(rels)), placed


@dataclass(frozen=True)
class UVProject(_PythonInstall):
    """`uv export --frozen` of the lock (inside the build), then `uv pip install` of it; with
    install_project, the project itself after its dependencies. extra_args belong to `uv export`
    (like `uv sync` in the original: --extra, --group, ...). Without a uv.lock (none given and
    none beside the pyproject) the dependencies are resolved at build time: `uv lock` first,
    as the original's `uv sync` does; the identifier then covers pyproject.toml alone.

    Local path sources (`[tool.uv.sources] dep = { path = "libs/dep" }`, editable or not, and
    theirs in turn) are staged at the same paths relative to the project, with the ignore rules
    of every layer's folder copy, and installed as regular packages (`--no-editable`): an
    editable install would point at a folder that exists only while the step runs."""

    KIND: ClassVar[str] = "uv_project"
    pyproject: Path = Path("pyproject.toml")
    uvlock: Path | None = None
    project_install_mode: ProjectInstallMode = "dependencies_only"

    def preflight(self) -> None:
        """Before a build stages anything: refuse a uv.lock that does not match pyproject.toml.
        uv checks the lock beside a project, so a lock given from another folder is not checked."""
        lock = default_lock(self.pyproject, self.uvlock, "uv.lock")
        own = self.pyproject.parent / "uv.lock"
        if lock is None or not self.pyproject.is_file() or not own.is_file() or not os.path.samefile(own, lock):
            return
        from ..._files.uvbin import check_lock

        check_lock(self.pyproject, lock)

    def inputs(self, sources: Sources, index: int) -> Inputs:
        lock = default_lock(self.pyproject, self.uvlock, "uv.lock")
        reader = Sources(cache=sources.cache)
        entry, data = reader.small_file(self.pyproject, "", "pyproject file")
        layout, placed = _layout(self.pyproject, local_sources(self.pyproject, data, reader), lock is not None)
        top = f"_fi/{index}"
        here = f"{top}/{layout.project}" if layout.project else top
        if sources.snap is not None:
            sources.snap.put_bytes(f"{here}/pyproject.toml", data, entry.mode, entry.digest)
        files: list[tuple[str, Staged]] = [("pyproject.toml", Staged(f"{here}/pyproject.toml", entry))]
        if lock is not None:
            files.append(staged_file(sources, lock, f"{here}/uv.lock", "uv.lock file"))
        trees: list[tuple[str, str, Tree]] = []
        if self.project_install_mode == "install_project":
            trees.append(_project_tree(sources, index, self.pyproject, "uv.lock"))
        for rel, path, below in placed:
            dest = f"{top}/{below}"
            if path.is_dir():
                trees.append((f"{rel}/", dest, sources.tree(path, dest, project=True, keep=("pyproject.toml",))))
            else:
                files.append(staged_file(sources, path, dest, "path source", rel))
        return Inputs(files=tuple(files), trees=tuple(trees), data=layout)

    def identity(self, inputs: Inputs) -> Encodable:
        layout: _UVLayout = inputs.data
        own_files = 2 if layout.locked else 1
        own_trees = 1 if self.project_install_mode == "install_project" else 0
        own = Inputs(files=inputs.files[:own_files], trees=inputs.trees[:own_trees])
        plain = (self.KIND, self.project_install_mode, _project_identity(own), self._install_options())
        if not layout.sources:
            return plain
        found = {label: s.entry.identity()[1:] for label, s in inputs.files[own_files:]}
        found.update({label: tree.identity() for label, _dest, tree in inputs.trees[own_trees:]})
        return (*plain, ("path_sources", layout.project, tuple(sorted(found.items()))))

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        layout: _UVLayout = inputs.data
        extra = out.split_args("extra_args", self.extra_args)
        # Path sources are installed as regular packages, built from their staged folders
        # (which a build backend may write into: the mount is then writable).
        editable = ["--no-editable"] if layout.sources and "--no-editable" not in extra else []
        export = q.shell_join(
            [*("uv", "export", "--frozen", "--no-emit-project", *editable, "--format", "requirements-txt"), *extra]
        )
        install = out.uv_install(self, ["-r", f"{out.WORK}/scratch/requirements.txt"], with_extra_args=False)
        if layout.locked:  # a uv.lock: install exactly what it pins
            script = f"{out.locked_export(index, export, layout.project)} && {install}"
        else:  # none: resolve now, into a lock that lives only in this step's writable mount
            downloads = () if out.venv else ("UV_PYTHON_DOWNLOADS=never",)
            lock = q.shell_join([*downloads, "uv", "lock", *out.index_args(self)])
            script = f"{out.locked_export(index, f'{lock} && {export}', layout.project)} && {install}"
        writable = not layout.locked or bool(layout.sources)
        out.run_step(script, [out.UV_CACHE, out.bind(index, rw=writable), out.SCRATCH], self.secret_mounts)
        if self.project_install_mode == "install_project":
            out.project_install(index, self.secret_mounts)


@dataclass(frozen=True)
class PoetryProject(Layer):
    KIND: ClassVar[str] = "poetry_project"
    pyproject: Path = Path("pyproject.toml")
    poetry_lock: Path = Path("poetry.lock")
    extra_args: str | None = None
    secret_mounts: tuple[Secret, ...] = ()
    project_install_mode: ProjectInstallMode = "dependencies_only"

    def inputs(self, sources: Sources, index: int) -> Inputs:
        files = (
            staged_file(sources, self.pyproject, f"_fi/{index}/pyproject.toml", "pyproject file"),
            staged_file(sources, self.poetry_lock, f"_fi/{index}/poetry.lock", "poetry.lock file"),
        )
        if self.project_install_mode == "dependencies_only":
            return Inputs(files=files)
        return Inputs(files=files, trees=(_project_tree(sources, index, self.pyproject, "poetry.lock"),))

    def identity(self, inputs: Inputs) -> Encodable:
        options = (self.extra_args, secrets_identity(self.secret_mounts))
        return (self.KIND, self.project_install_mode, _project_identity(inputs), options)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        poetry = ["uv", "tool", "run", "--from", f"poetry=={POETRY_VERSION}", "poetry", "install"]
        args = ["--no-interaction", "--no-root", *out.split_args("extra_args", self.extra_args)]
        env = "POETRY_VIRTUALENVS_CREATE=false UV_PYTHON_DOWNLOADS=never"
        script = f"cd {out.WORK}/{index} && {env} {q.shell_join(poetry + args)}"
        mounts = [out.UV_CACHE, out.POETRY_CACHE, out.bind(index, rw=True)]
        out.run_step(script, mounts, self.secret_mounts)
        if inputs.trees:
            out.project_install(index, self.secret_mounts)


@dataclass(frozen=True)
class UVScript(_PythonInstall):
    """A uv script's dependencies, installed from its header; the script itself is copied too,
    so its whole text (not only the header) is part of the identifier."""

    KIND: ClassVar[str] = "uv_script"
    script: Path = Path("script.py")

    def inputs(self, sources: Sources, index: int) -> Inputs:
        dest = f"_fi/{index}/{self.script.name}"
        from ..uvscript import parse_script_metadata

        entry, data = sources.small_file(self.script, dest, "uv script")
        metadata = parse_script_metadata(data.decode("utf-8", "replace"), str(self.script))
        return Inputs(files=((self.script.name, Staged(dest, entry)),), data=metadata)

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, inputs.files[0][1].entry.identity(), self._install_options())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        metadata: ScriptMetadata = inputs.data
        if metadata.dependencies:
            args = [q.shell_expanding(d) for d in metadata.dependencies]
            out.run_step(out.uv_install(self, args), [out.UV_CACHE], self.secret_mounts)
        out.copy(f"_fi/{index}/", "./")  # the folder: no glob in the source


@dataclass(frozen=True)
class PythonWheels(Layer):
    """Install every wheel of a local folder (the project's `dist/`), as `with_local_v2` does."""

    KIND: ClassVar[str] = "python_wheels"
    wheel_dir: Path = Path("dist")
    package_name: str | None = None

    def inputs(self, sources: Sources, index: int) -> Inputs:
        if not self.wheel_dir.is_dir():
            raise SourceNotFoundError(
                f"wheel folder {self.wheel_dir} does not exist; build the wheels first (e.g. `uv build`)"
            )
        found = sorted(self.wheel_dir.glob("*.whl"))
        if not found:
            raise SourceError(f"no .whl files in {self.wheel_dir}; build the wheels first (e.g. `uv build`)")
        return Inputs(files=tuple(staged_file(sources, w, f"_fi/{index}/{w.name}", "wheel") for w in found))

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.package_name, tuple(s.entry.identity() for _label, s in inputs.files))

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        mounts = [out.UV_CACHE, out.bind(index)]
        if not self.package_name:
            args = [q.shell_word(f"{out.WORK}/{index}/{label}") for label, _s in inputs.files]
            out.run_step(out.uv_install(None, args), mounts)
            return
        links, name = ["--find-links", f"{out.WORK}/{index}"], q.shell_word(self.package_name)
        # First the package with its dependencies, resolved from the index and the wheels;
        # the resolver may pick a released version higher than the local one (or fall back
        # to one when a dependency of the local wheel cannot be met). So the local wheel is
        # forced last, alone: no index, no dependencies, reinstalled over whatever came first.
        out.run_step(out.uv_install(None, [*links, name]), mounts)
        forced = [*links, "--no-deps", "--no-index", "--reinstall", name]
        out.run_step(out.uv_install(None, forced), mounts, downloads=False)


@dataclass(frozen=True)
class UVBinary(Layer):
    """The pinned uv at /usr/local/bin/uv in the image, for code that runs uv at run time (the
    install steps mount it and leave nothing of it behind)."""

    KIND: ClassVar[str] = "uv"

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND,)  # the uv version is in every identifier already (the renderer's part)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.uv_in_image()
