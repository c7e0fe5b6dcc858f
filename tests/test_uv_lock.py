"""A uv.lock that no longer matches its pyproject.toml stops a build before anything is staged
or sent to a backend, as `uv sync --locked` would; `id` and `dockerfile` never run uv.

Real uv runs here (the pinned uv's place in the cache is filled with the uv of the test
environment, so nothing is downloaded), on real projects locked offline: they have no
dependencies from an index, only a local path package."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import pytest

import flyte_images
from flyte_images import Image, SourceError
from flyte_images._files.statcache import cache_dir
from flyte_images._files.uvbin import _HOST_PLATFORMS, UV_VERSION, target_arch
from flyte_images._plan.plan import plan
from flyte_images.testing import FakeBuilder

if not sys.platform.startswith("linux"):
    pytest.skip("the pinned uv runs on Linux hosts", allow_module_level=True)

HOST_UV = Path(sys.executable).parent / "uv"
PYPROJECT = """\
[project]
name = "app"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = [{deps}]

[tool.uv.sources]
helper = {{ path = "helper" }}
other = {{ path = "other" }}
"""


def _package(folder: Path, name: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "1.0"\nrequires-python = ">=3.10"\ndependencies = []\n'
    )


@pytest.fixture
def pinned_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pinned uv's cache entry for this host, filled with the test environment's uv."""
    import platform

    if not HOST_UV.is_file():
        pytest.skip(f"no uv beside {sys.executable} (the dev extra installs it)")
    target = cache_dir() / "uv" / UV_VERSION / target_arch(_HOST_PLATFORMS[platform.machine().lower()]) / "uv"
    target.parent.mkdir(parents=True)
    shutil.copy2(HOST_UV, target)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # nothing cached: offline means offline
    return target


@pytest.fixture
def project(tmp_path: Path, pinned_uv: Path) -> Path:
    """A locked project depending on one local path package; its lock is fresh."""
    import subprocess

    root = tmp_path / "app"
    root.mkdir()
    _package(root, "helper")
    _package(root, "other")
    (root / "pyproject.toml").write_text(PYPROJECT.format(deps='"helper"'))
    subprocess.run([str(pinned_uv), "lock", "--offline", "--quiet"], cwd=root, check=True)
    return root


def _image(project: Path) -> Image:
    return Image.from_base("flyte-images/busybox:test").clone(name="locked").with_uv_project(project / "pyproject.toml")


def test_a_fresh_lock_builds(project: Path) -> None:
    fake = FakeBuilder()
    result = flyte_images.build(_image(project), builder=fake, quiet=True)
    assert result.built and len(fake.requests) == 1


@pytest.mark.parametrize(
    "deps",
    [
        '"helper", "requests>=2"',  # from an index: uv cannot resolve it offline
        '"helper", "other"',  # a local package: uv resolves it and sees the lock change
    ],
)
def test_a_dependency_added_without_relocking_stops_the_build_before_the_backend(project: Path, deps: str) -> None:
    lock = (project / "uv.lock").read_bytes()
    lock_mtime = (project / "uv.lock").stat().st_mtime_ns
    (project / "pyproject.toml").write_text(PYPROJECT.format(deps=deps))
    fake = FakeBuilder()
    with pytest.raises(SourceError) as caught:
        flyte_images.build(_image(project), builder=fake, quiet=True)
    message = str(caught.value)
    assert f"{project / 'uv.lock'} does not match {project / 'pyproject.toml'}" in message
    assert f"Run `uv lock` in {project}" in message
    assert fake.requests == []
    assert not list((cache_dir() / "staging").glob("*/context/_fi"))  # nothing was staged
    # The check neither rewrote the lock nor touched it.
    assert (project / "uv.lock").read_bytes() == lock and (project / "uv.lock").stat().st_mtime_ns == lock_mtime


def test_the_identifier_and_the_dockerfile_do_not_check_a_dry_run_can(project: Path) -> None:
    (project / "pyproject.toml").write_text(PYPROJECT.format(deps='"helper", "other"'))
    image = _image(project)
    assert image.identifier and plan(image).dockerfile  # no uv is run for these
    with pytest.raises(SourceError, match="does not match"):
        plan(image, check_locks=True)


def test_without_a_lock_there_is_nothing_to_check(project: Path) -> None:
    (project / "uv.lock").unlink()
    (project / "pyproject.toml").write_text(PYPROJECT.format(deps='"helper", "requests>=2"'))
    fake = FakeBuilder()
    assert flyte_images.build(_image(project), builder=fake, quiet=True).built
    assert "uv lock &&" in fake.requests[0].dockerfile.read_text()  # resolved inside the build


def test_a_uv_that_cannot_check_warns_and_the_build_goes_on(project: Path, pinned_uv: Path) -> None:
    pinned_uv.write_text(
        "#!/bin/sh\necho \"error: unexpected argument '--locked' found\" >&2\n"
        "echo 'cause: while reading https://me:s3cret-token@private.example/simple' >&2\nexit 2\n"
    )
    (project / "pyproject.toml").write_text(PYPROJECT.format(deps='"helper", "other"'))
    fake = FakeBuilder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert flyte_images.build(_image(project), builder=fake, quiet=True).built
    (warning,) = [w for w in caught if "could not check" in str(w.message)]
    assert "unexpected argument '--locked'" in str(warning.message)
    assert str(project / "uv.lock") in str(warning.message)
    assert "s3cret" not in str(warning.message) and "https://***@private.example/simple" in str(warning.message)
