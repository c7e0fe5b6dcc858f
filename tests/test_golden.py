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
from flyte_images._identity import IDENTIFIER_FORMAT, RENDERER_REVISION


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
    "from_base_multiarch": lambda root: (
        Image.from_base("python:3.12-slim")
        .clone(name="golden", platform=("linux/amd64", "linux/arm64"))
        .with_workdir("/srv")
        .with_source_file(root / "src" / "app.py")
    ),
}

GOLDEN = {
    "debian_base": "b3005cbb25adfec1d584c0f1335fc2a6",
    "debian_base_flyte": "5f7f195c96ebe4f0a3ca08a5549aa2b0",
    "apt_pip_env": "2eb1058c334065ca35523973a6a9cf13",
    "source_folder": "3982302437a792773f69a6d794f2d618",
    "requirements_commands": "ab5b4eb504b66f8141b9e8030c0d4d24",
    "from_base_multiarch": "a20d4b695e41b76e9adb6f462ff338b2",
}


def test_the_revision_the_table_was_made_for() -> None:
    assert (IDENTIFIER_FORMAT, RENDERER_REVISION) == (2, 2), "update GOLDEN (and the snapshots) with the bump"


@pytest.mark.parametrize("name", sorted(CASES))
def test_identifier_is_pinned(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _files(tmp_path / "project")
    monkeypatch.chdir(root)
    assert CASES[name](root).identifier == GOLDEN[name], f"identifier of {name!r} changed"
