"""What `flyte-images build` says it did: one word and one time per image, the same on the
progress line and in the summary."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from engine_support import BUSYBOX

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def _build(cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flyte_images._cli", "build", "images.py"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)


def test_an_append_is_reported_once_as_appended(tmp_path: Path, local_registry: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    (tmp_path / "images.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"app = (Image.from_base({BUSYBOX!r}).clone(name='fi-test-report', registry={local_registry!r})"
        ".with_commands(['echo engine part > /part'])"
        f".with_source_folder(Path({str(src)!r}), dst='/app'))\n"
    )
    first = _build(tmp_path)
    assert first.returncode == 0, first.stderr
    (src / "a.txt").write_text(f"edited {uuid.uuid4().hex}\n")

    edited = _build(tmp_path)
    assert edited.returncode == 0, edited.stderr
    progress = re.findall(r"^\[app\] (\w+) in ([0-9.]+) s$", edited.stderr, re.M)
    summary = re.findall(r"^app\s+built\s+\S+\s+\((\w+) in ([0-9.]+) s", edited.stderr, re.M)
    assert progress == summary == [progress[0]], edited.stderr
    assert progress[0][0] == "appended"
    assert "built in" not in edited.stderr
