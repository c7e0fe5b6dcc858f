"""Local path sources of a uv project (`[tool.uv.sources] dep = { path = ..., editable = ... }`):
staged at their paths relative to the project, part of the identifier with the ignore rules of
every folder copy, and installed as regular packages (the engine test builds one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyte_images import Image, SourceError, SourceNotFoundError
from flyte_images._plan.plan import plan

BASE = Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="mono")
APP = """\
[project]
name = "app"
version = "0.1.0"
dependencies = ["dep", "shared"]

[tool.uv.sources]
dep = {{ path = "libs/dep", editable = true }}
shared = [{{ path = "{shared}", marker = "sys_platform == 'linux'" }}, {{ index = "internal" }}]
"""


def _package(folder: Path, name: str, sources: str = "") -> None:
    (folder / "src" / name).mkdir(parents=True, exist_ok=True)
    (folder / "src" / name / "__init__.py").write_text("VALUE = 1\n")
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1.0"\n{sources}')


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """repo/app (the project, with libs/dep inside it) and repo/shared beside it."""
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / "app" / "pyproject.toml").write_text(APP.format(shared="../shared"))
    (root / "app" / "uv.lock").write_text("version = 1\n")
    _package(root / "app" / "libs" / "dep", "dep")
    _package(root / "shared", "shared")
    monkeypatch.chdir(tmp_path)  # no project .dockerignore
    return root


def _image(repo: Path, **kw: object) -> Image:
    return BASE.with_uv_project(repo / "app" / "pyproject.toml", **kw)  # type: ignore[arg-type]


def _dests(image: Image) -> set[str]:
    return {s.dest for s in plan(image).manifest}


def test_path_sources_are_staged_where_the_lock_expects_them(repo: Path) -> None:
    dests = _dests(_image(repo))
    # The project sits one folder down, so that ../shared is inside the layer's folder too.
    assert {"_fi/1/app/pyproject.toml", "_fi/1/app/uv.lock"} <= dests
    assert {"_fi/1/app/libs/dep/pyproject.toml", "_fi/1/app/libs/dep/src/dep/__init__.py"} <= dests
    assert {"_fi/1/shared/pyproject.toml", "_fi/1/shared/src/shared/__init__.py"} <= dests
    text = plan(_image(repo)).dockerfile
    assert "cd /tmp/flyte-images/1/app && uv export --frozen --no-emit-project --no-editable" in text
    assert "--mount=type=bind,source=_fi/1,target=/tmp/flyte-images/1,rw" in text  # a backend may write there


def test_a_project_without_path_sources_is_rendered_as_before(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "p"\nversion = "0"\n[tool.uv.sources]\nx = { git = "https://g.example/x" }\n'
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "uv.lock").write_text("version = 1\n")
    text = plan(BASE.with_uv_project(tmp_path / "pyproject.toml")).dockerfile
    assert "cd /tmp/flyte-images/1 && uv export --frozen --no-emit-project --format requirements-txt" in text
    assert "--no-editable" not in text and "target=/tmp/flyte-images/1 \\" in text  # read-only mount


def test_editing_a_path_source_changes_the_identifier_an_ignored_file_does_not(repo: Path) -> None:
    dep = repo / "app" / "libs" / "dep"
    (dep / ".dockerignore").write_text("*.log\n")
    image = _image(repo)
    before = image.identifier
    (dep / "debug.log").write_text("ignored")
    (dep / "src" / "dep" / "__pycache__").mkdir()
    (dep / "src" / "dep" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert image.identifier == before
    (dep / "src" / "dep" / "__init__.py").write_text("VALUE = 2\n")
    assert image.identifier != before
    edited = image.identifier
    (repo / "shared" / "src" / "shared" / "extra.py").write_text("")
    assert image.identifier != edited
    assert "_fi/1/app/libs/dep/debug.log" not in _dests(image)


def test_the_project_dockerignore_applies_to_path_sources(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / ".dockerignore").write_text("shared/notes/\n")
    monkeypatch.chdir(repo)  # the project root: its .dockerignore applies to every folder copy
    (repo / "shared" / "notes").mkdir()
    (repo / "shared" / "notes" / "a.md").write_text("a")
    image = _image(repo)
    before = image.identifier
    (repo / "shared" / "notes" / "a.md").write_text("b")
    assert image.identifier == before
    dests = _dests(image)
    assert "_fi/1/shared/src/shared/__init__.py" in dests and not any("notes" in d for d in dests)


def test_path_sources_of_path_sources_are_staged(repo: Path) -> None:
    _package(repo / "libs" / "base", "base")
    _package(repo / "shared", "shared", '[tool.uv.sources]\nbase = { path = "../libs/base" }\n')
    assert "_fi/1/libs/base/src/base/__init__.py" in _dests(_image(repo))


def test_install_project_keeps_its_own_copy_and_the_sources(repo: Path) -> None:
    image = _image(repo, project_install_mode="install_project")
    dests = _dests(image)
    assert {"_fi/1p/pyproject.toml", "_fi/1/shared/pyproject.toml"} <= dests
    assert "uv pip install --no-deps /tmp/flyte-images/1p" in plan(image).dockerfile


def test_a_wheel_as_path_source_is_staged_as_a_file(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0"\n[tool.uv.sources]\nw = { path = "wheels/w-1.0-py3-none-any.whl" }\n'
    )
    image = BASE.with_uv_project(tmp_path / "pyproject.toml")
    assert "_fi/1/wheels/w-1.0-py3-none-any.whl" in _dests(image)
    before = image.identifier
    (tmp_path / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(b"wheel 2")
    assert image.identifier != before


def test_bad_path_sources_are_named(repo: Path) -> None:
    (repo / "app" / "pyproject.toml").write_text(APP.format(shared="../missing"))
    with pytest.raises(SourceNotFoundError, match=r"path source \.\./missing of .*pyproject.toml does not exist"):
        _ = _image(repo).identifier
    (repo / "app" / "pyproject.toml").write_text(APP.format(shared=str(repo / "shared")))
    with pytest.raises(SourceError, match=r"by an absolute path.*write it relative to"):
        _ = _image(repo).identifier
    (repo / "app" / "pyproject.toml").write_text(APP.format(shared=".."))
    with pytest.raises(SourceError, match="holds the project itself"):
        _ = _image(repo).identifier
