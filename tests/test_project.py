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


def test_flyte_images_id_loads_only_what_it_needs(tmp_path: Path) -> None:
    """`flyte-images id` of an image that copies a folder pays no import it does not need (each
    costs every run of the command: see README, Performance)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("A = 1\n")
    (tmp_path / "images.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        "img = Image.from_debian_base(install_flyte=False).with_source_folder(Path(__file__).parent / 'src')\n"
    )
    code = (
        "import sys; from flyte_images._cli import main; sys.argv[1:] = ['id', sys.argv[1]]; main(); "
        "print(','.join(sorted(sys.modules)))"
    )
    loaded = set(_run(sys.executable, "-c", code, tmp_path / "images.py").stdout.strip().splitlines()[-1].split(","))
    assert "flyte_images._plan.plan" in loaded  # the identifier was computed
    for unneeded in (
        "asyncio", "concurrent.futures", "email", "httpx", "importlib.metadata", "importlib.resources", "pydantic",
        "rich", "subprocess", "tempfile", "tomllib", "zipfile", "flyte_images._build", "flyte_images._deploy",
        "flyte_images._image.environment", "flyte_images._image.layers.pixi", "flyte_images._image.layers.python",
        "flyte_images._files.staging", "flyte_images.builders",
    ):  # fmt: skip
        assert unneeded not in loaded, f"flyte-images id loads {unneeded}"


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
