"""Where a command's output cannot go: a closed stdout, a reader that went away, a full disk.
The result is lost, so the command fails (exit 1) with one line on stderr, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

IMAGES = """
from flyte_images import Image
app = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="app").with_env_vars({"A": "1"})
"""


@pytest.fixture
def images(tmp_path: Path) -> Path:
    path = tmp_path / "images.py"
    path.write_text(IMAGES)
    return path


def _run(images: Path, stdout: int | None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flyte_images._cli", "id", str(images)]
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False, timeout=120)


def _one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_closed_stdout_fails_with_one_line(images: Path) -> None:
    command = [sys.executable, "-m", "flyte_images._cli", "id", str(images)]
    done = subprocess.run(
        ["bash", "-c", '"$@" >&-', "bash", *command], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 1
    assert "standard output is closed" in _one_clean_line(done.stderr)


def test_reader_gone_fails_with_one_line(images: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # like `| head -1` that has already exited
    try:
        done = _run(images, write)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert "cannot write to standard output" in _one_clean_line(done.stderr)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_full_disk_on_stdout_fails_with_one_line(images: Path) -> None:
    with open("/dev/full", "w") as full:
        done = _run(images, full.fileno())
    assert done.returncode == 1
    assert "No space left" in _one_clean_line(done.stderr)


def test_output_that_can_be_written_still_succeeds(images: Path) -> None:
    done = _run(images, subprocess.PIPE)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"app\s+app:[0-9a-f]{32}\n", done.stdout), done.stdout
