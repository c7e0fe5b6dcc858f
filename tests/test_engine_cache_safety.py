"""On the real engine and a loopback registry: a 255-byte file name builds by either path, and a
cache folder that cannot be written is one clear error by either path, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from engine_support import BUSYBOX, docker, remove_image, run_in
from test_cache_safety import LONG_NAME, unwritable_cache

import flyte_images
from flyte_images import Image

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / LONG_NAME).write_text("long\n")
    (src / "short.txt").write_text("short\n")
    return src


def _image(src: Path, registry: str, marker: str) -> Image:
    return (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-long-name", registry=registry)
        .with_commands([f"echo {marker} > /marker"])
        .with_source_folder(src, dst="/app")
    )


def test_a_255_byte_file_name_builds_by_the_engine_and_by_append(tmp_path: Path, local_registry: str) -> None:
    image = _image(_source(tmp_path), local_registry, uuid.uuid4().hex)
    by_engine = flyte_images.build(image, builder="docker", force=True, quiet=True)
    assert by_engine.built and by_engine.path == "engine"
    assert run_in(by_engine.uri, f"cat /app/src/{LONG_NAME} /app/src/short.txt") == "long\nshort\n"
    remove_image(by_engine.uri)
    appended = flyte_images.build(image, builder="append", force=True, quiet=True)
    assert appended.built and appended.path == "append" and appended.uri == by_engine.uri
    remove_image(appended.uri)
    docker("pull", appended.uri)
    assert run_in(appended.uri, f"cat /app/src/{LONG_NAME} /app/src/short.txt") == "long\nshort\n"
    remove_image(appended.uri)


@pytest.mark.parametrize("how", ["read-only mount", "below a file"])
@pytest.mark.parametrize("builder", ["docker", "append"])
def test_a_cache_folder_that_cannot_be_written_fails_a_build_in_one_line(
    tmp_path: Path, local_registry: str, how: str, builder: str
) -> None:
    src = _source(tmp_path)
    images = tmp_path / "images.py"
    images.write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"img = Image.from_base({BUSYBOX!r}).clone(name='fi-test-ro-cache', registry={local_registry!r})"
        f".with_commands(['echo {uuid.uuid4().hex} > /marker']).with_source_folder(Path({str(src)!r}), dst='/app')\n"
    )
    with unwritable_cache(tmp_path, how) as folder:
        done = subprocess.run(
            [sys.executable, "-m", "flyte_images._cli", "build", str(images), "--builder", builder, "--force"],
            capture_output=True,
            text=True,
            env={**os.environ, "FLYTE_IMAGES_CACHE_DIR": str(folder)},
            timeout=600,
            check=False,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert f"cache folder {folder} " in error and "FLYTE_IMAGES_CACHE_DIR" in error
