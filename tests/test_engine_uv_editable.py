"""A uv project of a monorepo on a real Docker engine: its local path sources (one editable
inside the project, one beside it) are staged and installed, and import in the built image."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import run_in

import flyte_images
from flyte_images import Image

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]
APP = Path(__file__).resolve().parent.parent / "fixtures" / "projects" / "uvmono" / "app"
IMPORTS = "import dep, shared; print(dep.VALUE); print(shared.VALUE); print(dep.__file__); print(shared.__file__)"


def build(image: Image) -> str:
    result = flyte_images.build(image, force=True, quiet=True)
    assert result.built
    return str(result)


def base(name: str) -> Image:
    return Image.from_debian_base(python_version=(3, 11), install_flyte=False, name=f"fi-test-{name}")


def test_path_sources_are_installed_into_the_image() -> None:
    deps = build(base("uvmono").with_uv_project(APP / "pyproject.toml"))
    out = run_in(deps, f"cd / && python -c '{IMPORTS}'; python -c 'import app' 2>&1 || true").splitlines()
    assert out[:2] == ["dep 0.2.0", "shared 0.1.0"]
    # Regular installs, not editable links to a folder that was mounted only while installing.
    assert all(line.startswith("/opt/venv/lib/python3.11/site-packages/") for line in out[2:4]), out
    assert "No module named 'app'" in out[-1]  # dependencies only

    full = build(base("uvmonofull").with_uv_project(APP / "pyproject.toml", project_install_mode="install_project"))
    out = run_in(full, f"cd / && python -c '{IMPORTS}; import app; print(app.GREETING)'").splitlines()
    assert out[:2] == ["dep 0.2.0", "shared 0.1.0"]
    assert out[-1] == "hello from app"
