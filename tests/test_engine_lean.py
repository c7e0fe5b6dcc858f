"""Build tools at build time only: uv is mounted into the steps that run it and is no file of
the image; poetry runs from uv's cache mount; `with_uv()` puts the pinned uv back in.

The engine tests reach the package index from inside the build (the CA bundle as a secret where
the host has one, as in test_engine_build.py); the fake's test needs nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import BASE_IMAGE, docker, run_in

import flyte_images
from flyte_images import Image
from flyte_images._files.uvbin import UV_VERSION
from flyte_images.testing.fake import FakeBuilder

PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"
engine = pytest.mark.usefixtures("engine")
# Where an image could hold a uv or a poetry: any file of these names, and on PATH.
NO_TOOLS = (
    "test ! -e /usr/local/bin/uv && ! command -v uv && ! command -v poetry"
    ' && test -z "$(find / -xdev \\( -name uv -o -name poetry \\) -type f 2>/dev/null)" && echo none'
)


def _debian(name: str) -> Image:
    return Image.from_debian_base(python_version=(3, 11), install_flyte=False, name=f"fi-test-lean-{name}")


def _build(image: Image) -> str:
    result = flyte_images.build(image, force=True, quiet=True)
    assert result.built
    return result.uri


@pytest.mark.engine
@engine
def test_pip_requirements_and_uv_project_install_and_leave_no_uv() -> None:
    image = (
        _debian("uvsteps")
        .with_pip_packages("six==1.16.0")
        .with_requirements(PROJECTS / "reqs" / "requirements.txt")
        .with_uv_project(PROJECTS / "uvproj" / "pyproject.toml", project_install_mode="install_project")
    )
    uri = _build(image)
    script = "python -c 'import six, idna, uvproj; print(six.__version__, idna.__version__, uvproj.GREETING)'"
    assert run_in(uri, script).strip() == "1.16.0 3.7 hello from uvproj"
    assert run_in(uri, NO_TOOLS).strip() == "none"
    # Not even as a layer's file that a later one hides: no layer of the image holds it.
    history = docker("image", "history", "--no-trunc", "--format", "{{.CreatedBy}}", uri).stdout
    assert "/usr/local/bin/uv" not in history.replace("target=/usr/local/bin/uv", "")


@pytest.mark.engine
@engine
def test_poetry_project_installs_and_leaves_neither_poetry_nor_uv() -> None:
    uri = _build(_debian("poetry").with_poetry_project(PROJECTS / "poetryproj" / "pyproject.toml"))
    assert run_in(uri, "python -c 'import idna; print(idna.__version__)'").strip() == "3.7"
    assert run_in(uri, NO_TOOLS).strip() == "none"


@pytest.mark.engine
@engine
def test_an_image_on_the_base_python_has_no_uv() -> None:
    image = Image.from_base(BASE_IMAGE).clone(name="fi-test-lean-system").with_pip_packages("six==1.16.0")
    uri = _build(image)
    assert run_in(uri, "python3 -c 'import six; print(six.__version__)'").strip() == "1.16.0"
    assert run_in(uri, NO_TOOLS).strip() == "none"


@pytest.mark.engine
@engine
def test_with_uv_keeps_the_pinned_uv_and_it_runs() -> None:
    uri = _build(_debian("keep").with_pip_packages("six==1.16.0").with_uv())
    out = run_in(uri, "command -v uv && uv --version && uv pip list --offline 2>/dev/null | grep -i '^six '")
    where, version, six = out.splitlines()
    assert where == "/usr/local/bin/uv" and version.split()[:2] == ["uv", UV_VERSION]
    assert six.split() == ["six", "1.16.0"]


def test_with_uv_is_part_of_the_identifier_and_the_fake_sees_uv_only_with_it() -> None:
    # A fake that knows only the base: the stage holding uv is `scratch`, never pulled.
    builder = FakeBuilder(bases={BASE_IMAGE})
    lean = Image.from_base(BASE_IMAGE).clone(name="lean").with_pip_packages("six==1.16.0")
    kept = lean.with_uv()
    assert lean.identifier != kept.identifier
    lean_uri = flyte_images.build(lean, builder=builder, quiet=True).uri
    kept_uri = flyte_images.build(kept, builder=builder, quiet=True).uri
    assert "/usr/local/bin/uv" not in builder.store[lean_uri].files
    assert builder.store[kept_uri].modes["/usr/local/bin/uv"] == 0o755
