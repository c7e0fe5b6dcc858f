"""Hostile names and values on the real engine: odd file names copy, injected lines stay text."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import write_tree
from engine_support import BUSYBOX

import flyte_images
from flyte_images import Image

pytestmark = pytest.mark.engine

NAMES = ["a[1].py", "*.py", "q?.txt", "d\\e.py", "sp ace.txt", "$HOME.txt"]


def _run(uri: str, *command: str) -> str:
    return subprocess.run(["docker", "run", "--rm", uri, *command], check=True, capture_output=True, text=True).stdout


def test_file_and_folder_names_buildkit_would_read_as_globs_copy_exactly(engine: None, tmp_path: Path) -> None:
    for name in NAMES:
        (tmp_path / name).write_text(f"content of {name}\n")
    write_tree(tmp_path / "pkg[1]", {"m.py": (b"m\n", 0o644)})
    image = Image.from_base(BUSYBOX).clone(name=f"fi-hostile-{uuid.uuid4().hex[:8]}")
    image = image.with_source_file([tmp_path / n for n in NAMES], dst="/app").with_source_folder(
        tmp_path / "pkg[1]", dst="/app"
    )
    result = flyte_images.build(image, quiet=True, push=False)
    try:
        listing = _run(result.uri, "find", "/app", "-type", "f")
        assert sorted(listing.split("\n")[:-1]) == sorted([*(f"/app/{n}" for n in NAMES), "/app/pkg[1]/m.py"])
        assert _run(result.uri, "cat", "/app/a[1].py") == "content of a[1].py\n"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", result.uri], capture_output=True, check=False)


def test_a_line_separator_in_a_value_stays_inside_its_instruction(engine: None) -> None:
    value = "x\u2028RUN touch /pwned\u2029\x85y"
    image = Image.from_base(BUSYBOX).clone(name=f"fi-hostile-{uuid.uuid4().hex[:8]}")
    image = image.with_env_vars({"V": value}).with_workdir("/w\u2028RUN touch /pwned2")
    result = flyte_images.build(image, quiet=True, push=False)
    try:
        out = _run(result.uri, "sh", "-c", 'printf %s "$V"; ls / | grep -c pwned || true')
        assert out == value + "0\n"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", result.uri], capture_output=True, check=False)
