"""The drop-in behaviours on a real engine: flyte's default image layout, layers on the published
image, uv projects without a lock, and a local wheel forced over a higher release.

The published image ghcr.io/flyteorg/flyte:py3.11-v2.12.1 cannot be pulled here: the session
fixture makes the local stand-in of fixtures/engine/flyte-standin.sh when it is missing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest
from engine_support import docker, run_in

import flyte_images
from flyte_images import Image
from flyte_images._image.layers import PythonWheels

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]
STANDIN = "ghcr.io/flyteorg/flyte:py3.11-v2.12.1"
SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "engine" / "flyte-standin.sh"


@pytest.fixture(scope="session")
def flyte_standin(engine: None) -> str:
    """The published default image, or its local stand-in (made once when missing)."""
    if docker("image", "inspect", STANDIN, check=False).returncode != 0:
        made = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=1200)
        if made.returncode != 0:
            problem = f"{SCRIPT.name} failed: {made.stderr[-2000:]}"
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(problem)
    return STANDIN


def build(image: Image) -> str:
    result = flyte_images.build(image, force=True, quiet=True)
    assert result.built
    return str(result)


def test_the_built_debian_base_runs_as_flyte_in_its_home(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print('app')\n")
    image = (
        Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="fi-test-dropin-base")
        .with_apt_packages("jq")
        .with_source_folder(tmp_path / "src")
    )
    uri = build(image)
    out = run_in(
        uri,
        'whoami; pwd; echo "$PYTHONPATH"; command -v python; command -v gcc; stat -c %U src/app.py; echo {} | jq -c .',
    )
    assert out.splitlines() == [
        "flyte", "/home/flyte", "/root", "/opt/venv/bin/python", "/usr/bin/gcc", "flyte", "{}",
    ]  # fmt: skip
    assert docker("image", "inspect", "-f", "{{.Config.User}}", uri).stdout.strip() == "flyte"


def test_a_layer_on_the_default_image_builds_from_the_published_one(flyte_standin: str) -> None:
    default = Image.from_debian_base(python_version=(3, 11))
    assert default.is_reference and default.uri == flyte_standin
    image = default.clone(name="fi-test-dropin-flyte").with_pip_packages("six==1.16.0")
    uri = build(image)
    out = run_in(uri, 'whoami; python -c "import flyte, six; print(flyte.__version__, six.__version__)"')
    assert out.splitlines() == ["flyte", "2.12.1 1.16.0"]

    # Built FROM the published image: its layers are the first layers of ours, untouched.
    def layers(ref: str) -> list[str]:
        return list(json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", ref).stdout))

    base_layers, ours = layers(flyte_standin), layers(uri)
    assert ours[: len(base_layers)] == base_layers and len(ours) > len(base_layers)


def test_a_uv_project_without_a_lock_and_a_strict_dockerignore(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "noloc").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "noloc"\nversion = "0.1.0"\nrequires-python = ">=3.11"\ndependencies = ["six==1.16.0"]\n'
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[tool.setuptools]\npackages = ["noloc"]\n'
    )
    (project / "noloc" / "__init__.py").write_text("NAME = 'noloc'\n")
    (project / ".dockerignore").write_text("*.toml\n*.lock\n")
    base = Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="fi-test-dropin-uv")
    image = base.with_uv_project(project / "pyproject.toml", project_install_mode="install_project")
    uri = build(image)
    assert run_in(uri, 'python -c "import six, noloc; print(six.__version__, noloc.NAME)"').strip() == "1.16.0 noloc"


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel of `name` whose module says its version."""
    files = {
        f"{name}.py": f"__version__ = {version!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{name}-{version}.dist-info/RECORD"] = (
        "\n".join([*record, f"{name}-{version}.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def test_a_local_wheel_wins_over_a_higher_release_on_the_index(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    _wheel(dist, "six", "0.0.1")  # PyPI has six 1.17: the resolver picks that one first
    base = Image.from_debian_base(
        python_version=(3, 11), install_flyte=False, name=f"fi-test-dropin-{uuid.uuid4().hex[:6]}"
    )
    uri = build(base.clone(addl_layer=PythonWheels(wheel_dir=dist, package_name="six")))
    assert run_in(uri, 'python -c "import six; print(six.__version__)"').strip() == "0.0.1"
