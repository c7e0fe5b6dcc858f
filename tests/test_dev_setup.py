"""What a newcomer runs first: the README's install and set-up commands do what it says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
JUST = Path(sys.executable).parent / "just"
# The scripts the tests' set-up runs after the Docker engine; the demo needs none of them.
TEST_ONLY = ("buildkit.sh", "multiarch.sh", "flyte-standin.sh")


def test_the_readme_never_installs_flyte_images_from_an_index() -> None:
    """flyte-images is not on PyPI: each `pip install` of it names a checkout, a wheel or a git
    URL, or adds an extra to an installed flyte-images."""
    targets = [m.group(1) for m in re.finditer(r"pip install\s+['\"]?([^\s'\"`]+)", README)]
    assert "./flyte-images" in targets
    from_index = [t for t in targets if re.fullmatch(r"flyte[-_]images([=<>!~].*)?", t)]
    assert not from_index, f"the README installs flyte-images from an index: {from_index}"


def test_the_first_screen_gives_the_quick_start_and_the_developer_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:50])
    assert "pip install ./flyte-images" in first_screen
    assert "flyte-images build images.py --push" in first_screen
    commands = re.findall(r"^(bash fixtures/dev\.sh \w+)", first_screen, re.MULTILINE)
    assert commands == ["bash fixtures/dev.sh demo", "bash fixtures/dev.sh test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "bash fixtures/dev.sh test", "CI runs exactly the README's test command"


@pytest.mark.skipif(not JUST.exists(), reason="just is installed with the dev tools")
def test_the_demo_recipe_sets_up_only_what_the_demo_needs() -> None:
    demo = subprocess.run([JUST, "--dry-run", "demo"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "bash fixtures/engine/setup.sh --demo" in demo.stderr, demo.stderr
    tests = subprocess.run([JUST, "--dry-run", "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert re.search(r"^bash fixtures/engine/setup\.sh \|\|", tests.stderr, re.MULTILINE), tests.stderr


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
@pytest.mark.skipif(os.geteuid() != 0, reason="fixtures/engine/setup.sh runs as root")
def test_the_demo_setup_makes_no_buildkit_daemon_and_no_arm64_bases(tmp_path: Path) -> None:
    """`setup.sh --demo` stops after the engine and its Debian base; the tests' set-up goes on to
    the scripts that take minutes. Those are replaced by stubs here, which only leave a mark."""
    scripts = tmp_path / "engine"
    shutil.copytree(ROOT / "fixtures" / "engine", scripts)
    for name in TEST_ONLY:
        (scripts / name).write_text(f'touch "{tmp_path}/ran-{name}"\n')

    demo = subprocess.run(["bash", scripts / "setup.sh", "--demo"], capture_output=True, text=True, check=False)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "ready for the demo" in demo.stderr
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == []

    full = subprocess.run(["bash", scripts / "setup.sh"], capture_output=True, text=True, check=False)
    assert full.returncode == 0, full.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == sorted(f"ran-{name}" for name in TEST_ONLY)
