"""A CI no-op on a fresh runner: three environments whose images are all in the registry are
decided without staging a file or fetching uv, and the tool writes almost nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import BUSYBOX, docker

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

IMAGES = """
from pathlib import Path
from flyte_images import Image, TaskEnvironment
HERE = Path(__file__).parent
def base(name):
    return Image.from_debian_base(python_version=(3, 11), install_flyte=False, registry={registry!r}, name=name)
train = TaskEnvironment("train", image=base("noop-train").with_pip_packages("six").with_source_folder(HERE / "src"))
serve = TaskEnvironment("serve", image=base("noop-serve").with_uv_project(HERE / "proj" / "pyproject.toml"))
batch = TaskEnvironment("batch", image=base("noop-batch").with_pip_packages("attrs").with_env_vars({{"A": "1"}}))
"""


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_fresh_runner_decides_three_existing_images_without_staging_or_fetching(
    tmp_path: Path, local_registry: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"m{i}.py").write_bytes(os.urandom(4096))  # 800 KB that a staging copy would write
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\nrequires-python = ">=3.11"\n')
    (proj / "uv.lock").write_text(
        'version = 1\nrequires-python = ">=3.11"\n\n'
        '[[package]]\nname = "p"\nversion = "0"\nsource = { virtual = "." }\n'
    )
    images = tmp_path / "images.py"
    images.write_text(IMAGES.format(registry=local_registry))
    cli = [sys.executable, "-m", "flyte_images._cli"]
    listed = subprocess.run([*cli, "id", str(images), "--json"], capture_output=True, text=True, check=True)
    uris = sorted({entry["uri"] for entry in json.loads(listed.stdout)["images"]})
    assert len(uris) == 3
    for uri in uris:  # the registry has every image (their contents do not matter to the check)
        docker("tag", BUSYBOX, uri)
        docker("push", uri)

    fresh = tmp_path / "runner"  # a runner's empty home and cache folder
    cache = fresh / "cache"
    env = {
        **os.environ,
        "HOME": str(fresh),
        "FLYTE_IMAGES_CACHE_DIR": str(cache),
        # Any attempt to fetch uv (pip download) fails: a no-op must not need it.
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_NO_INDEX": "1",
    }
    env.pop("FLYTE_IMAGES_STAT_CACHE", None)
    done = subprocess.run([*cli, "build", str(images), "--json"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)["status"]
    assert set(status.values()) == {"exists"} and len(status) == 3
    assert not (cache / "uv").exists()  # uv was never fetched
    assert not list(cache.glob("staging/*/context"))  # nothing staged
    assert _size(fresh) <= 1 << 20, sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*"))
