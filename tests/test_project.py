"""The project itself: lint and types are clean, the wheel ships everything and works installed."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = _run(BIN / "ruff", *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run(BIN / "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_is_cheap() -> None:
    code = "import sys, flyte_images; print(','.join(sorted(sys.modules)))"
    loaded = set(_run(sys.executable, "-c", code).stdout.strip().split(","))
    for heavy in ("docker", "python_on_whales", "rich", "boto3", "httpx", "pydantic", "hypothesis"):
        assert heavy not in loaded, f"import flyte_images pulls in {heavy}"


@pytest.mark.slow
def test_wheel_ships_the_package_data_and_runs_installed(tmp_path: Path) -> None:
    built = _run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "flyte_images/__init__.py",
        "flyte_images/_cli/__init__.py",
        "flyte_images/builders/__init__.py",
        "flyte_images/dockerfiles/debian-base.Dockerfile",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.startswith(("builders/", "dockerfiles/", "tests/")) for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = _run(py, "-m", "pip", "install", "--quiet", wheel)
    assert install.returncode == 0, install.stderr[-2000:]
    images = tmp_path / "images.py"
    images.write_text(
        "from flyte_images import Image\n"
        "img = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_apt_packages('git')\n"
    )
    smoke = _run(env_dir / "bin" / "flyte-images", "id", images, "--json", cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stderr
    assert '"uri": "flyte:' in smoke.stdout
    files = _run(py, "-c", "import importlib.resources as r; print((r.files('flyte_images') / 'dockerfiles').is_dir())")
    assert files.stdout.strip() == "True"
