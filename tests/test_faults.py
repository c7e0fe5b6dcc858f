"""Faults: a full disk while staging, two processes building one image, odd files in a tree."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import BuildError, Image
from flyte_images._files import staging as stage_module
from flyte_images.testing import FakeBuilder

BASE = "flyte-images/busybox:test"


def _image(src: Path) -> Image:
    return Image.from_base(BASE).clone(name="faults").with_source_folder(src, dst="/app")


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 2 MiB tmpfs as the cache folder (needs root; skipped with the reason otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)]
    done = subprocess.run(command, check=False, capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small tmpfs in CI: {done.stderr.decode().strip()}")
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.decode().strip()}")
    monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(mount))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_staging_is_one_clear_error_and_leaves_no_partial_file(
    tmp_path: Path, small_disk: Path
) -> None:
    src = tmp_path / "src"
    write_tree(src, {"small.txt": (b"s", 0o644), "weights.bin": (os.urandom(3 << 20), 0o644)})
    fake = FakeBuilder()
    with pytest.raises(BuildError, match=r"no space left to stage.*FLYTE_IMAGES_CACHE_DIR"):
        flyte_images.build(_image(src), builder=fake, quiet=True)
    assert not fake.requests
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".staging")]
    (src / "weights.bin").write_bytes(b"smaller now")
    result = flyte_images.build(_image(src), builder=fake, quiet=True)  # the next build just works
    assert fake.store[result.uri].files["/app/src/weights.bin"] == b"smaller now"


def test_symlinks_leaving_the_folder_are_copied_as_links_and_fifos_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": (b"a", 0o644)})
    (tmp_path / "secret.txt").write_text("outside")
    (src / "out").symlink_to(tmp_path / "secret.txt")
    (src / "rel").symlink_to("../secret.txt")
    os.mkfifo(src / "pipe")
    flyte_images.build(_image(src), builder=FakeBuilder(), quiet=True)
    staged = next(stage_module.staging_root().iterdir()) / "context" / "_fi" / "0" / "src"
    assert sorted(p.name for p in staged.iterdir()) == ["a.txt", "out", "rel"]  # no fifo
    assert os.readlink(staged / "rel") == "../secret.txt"
    assert os.readlink(staged / "out") == str(tmp_path / "secret.txt")  # a link, never its target's bytes


def test_a_non_utf8_file_name_copies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes, not UTF-8
    (src / name).write_bytes(b"latin")
    made = flyte_images._plan.plan.plan(_image(src))  # type: ignore[attr-defined]
    assert [s.entry.path for s in made.manifest] == [name]
    assert len(made.identifier) == 32


_BUILD = """
import sys
from pathlib import Path
import flyte_images
from flyte_images import Image
image = Image.from_base("flyte-images/busybox:test").clone(name=sys.argv[2])
image = image.with_source_folder(Path(sys.argv[1]), dst="/app")
print(flyte_images.build(image, quiet=True, push=False))
"""


@pytest.mark.engine
def test_two_processes_building_the_same_new_image_both_succeed_with_one_uri(engine: None, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {f"f{i}.txt": (os.urandom(2000), 0o644) for i in range(200)})
    name = f"fi-faults-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-c", textwrap.dedent(_BUILD), str(src), name]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _out, err in outs]
    uris = {out.strip() for out, _err in outs}
    assert len(uris) == 1
    (uri,) = uris
    inspect = subprocess.run(["docker", "image", "inspect", uri], capture_output=True, check=False)
    assert inspect.returncode == 0
    subprocess.run(["docker", "image", "rm", "-f", uri], capture_output=True, check=False)


def test_an_unreadable_file_is_an_error_naming_it() -> None:
    """As root every file is readable, so the identifier is computed by user nobody (setpriv)."""
    import shutil
    import tempfile

    if shutil.which("setpriv") is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root with setpriv (util-linux); this test must run there")
        pytest.skip("needs root and setpriv to act as another user")
    root = Path(tempfile.mkdtemp(prefix="fi-unreadable-"))
    try:
        root.chmod(0o755)
        write_tree(root / "src", {"ok.txt": (b"ok", 0o644), "locked.txt": (b"x", 0o000)})
        (root / "src").chmod(0o755)
        script = (
            "import sys; from pathlib import Path; from flyte_images import Image\n"
            "image = Image.from_base('python:3.12-slim').clone(name='x').with_source_folder(Path(sys.argv[1]))\n"
            "try:\n    image.identifier\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        env = {"PATH": os.environ["PATH"], "HOME": str(root), "FLYTE_IMAGES_CACHE_DIR": str(root / "cache")}
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script]
        done = subprocess.run([*command, str(root / "src")], capture_output=True, text=True, check=False, env=env)
        assert done.stdout.startswith("SourceError") and "locked.txt" in done.stdout, done.stdout + done.stderr
        assert "permission denied" in done.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
