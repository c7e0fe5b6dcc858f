"""Pinned identifiers: a change in any of them means every user's image would be rebuilt.

If this fails after a deliberate change of the rendering or the identifier format, bump
RENDERER_REVISION (or IDENTIFIER_FORMAT) in flyte_images/_identity.py, rewrite the snapshots
(UPDATE_SNAPSHOTS=1, see test_render.py) and update this table in the same commit. If it fails
and you did not mean to change what images are built from, the change is a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_tree

from flyte_images import Image, Secret
from flyte_images._image.identity import IDENTIFIER_FORMAT, RENDERER_REVISION


def _files(root: Path) -> Path:
    write_tree(
        root,
        {
            "src/app.py": (b"print('hello')\n", 0o644),
            "src/pkg/__init__.py": (b"", 0o644),
            "src/run.sh": (b"#!/bin/sh\necho run\n", 0o755),
            "requirements.txt": (b"six==1.16.0\n", 0o644),
        },
    )
    for folder in (root / "src", root / "src" / "pkg"):
        folder.chmod(0o755)  # folder modes are part of the identifier: do not depend on the umask
    return root


def _debian() -> Image:
    return Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="golden")


CASES: dict[str, Callable[[Path], Image]] = {
    "debian_base": lambda root: _debian(),
    "debian_base_flyte": lambda root: Image.from_debian_base(python_version=(3, 11), name="golden"),
    "debian_base_flyte_layered": lambda root: Image.from_debian_base(python_version=(3, 11)).with_pip_packages("six"),
    "apt_pip_env": lambda root: (
        _debian()
        .with_apt_packages("git", "curl")
        .with_pip_packages("numpy==2.1.0", index_url="https://user:pw@pypi.example/simple")
        .with_env_vars({"A": "1", "B": "two words"})
    ),
    "source_folder": lambda root: _debian().with_source_folder(root / "src", dst="/app"),
    "requirements_commands": lambda root: (
        _debian()
        .with_requirements(root / "requirements.txt")
        .with_commands(["echo hi"], secret_mounts=[Secret(key="tok")])
    ),
    "pip_uv_kept": lambda root: _debian().with_pip_packages("six==1.16.0").with_uv(),
    "from_base_multiarch": lambda root: (
        Image.from_base("python:3.12-slim")
        .clone(name="golden", platform=("linux/amd64", "linux/arm64"))
        .with_workdir("/srv")
        .with_source_file(root / "src" / "app.py")
    ),
}

GOLDEN = {
    "debian_base": "ab526ec0f8028367c3340704141f9d21",
    "debian_base_flyte": "2bed39f68bfaba40622d62c26634ce30",
    "debian_base_flyte_layered": "d2093bc0fdfb10f06f122c105e6b412c",
    "apt_pip_env": "11cdf8e1972a272695e606f8e6374c22",
    "source_folder": "8503b7549280679cc4a1fcae6829db72",
    "requirements_commands": "f0160434d215996a78543ded3d0e84d7",
    "pip_uv_kept": "9378a4c2e826e97dc42caa3dd96f0987",
    "from_base_multiarch": "325688874eb8fc63071e470b92ee97d5",
}


def test_the_revision_the_table_was_made_for() -> None:
    assert (IDENTIFIER_FORMAT, RENDERER_REVISION) == (2, 4), "update GOLDEN (and the snapshots) with the bump"


@pytest.mark.parametrize("name", sorted(CASES))
def test_identifier_is_pinned(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _files(tmp_path / "project")
    monkeypatch.chdir(root)
    assert CASES[name](root).identifier == GOLDEN[name], f"identifier of {name!r} changed"
