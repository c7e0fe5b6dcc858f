"""Hostile file names, paths and arguments: each ends in a clean copy or one clear error.

Builds run on the fake backend here; test_engine_hostile.py repeats the file-name cases on the
real engine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import Image, SourceError
from flyte_images._cli import main
from flyte_images._files import staging as stage_module
from flyte_images.testing import FakeBuilder

BASE = "flyte-images/busybox:test"
GLOB_NAMES = ["a[1].py", "*.py", "q?.txt", "d\\e.py", "sp ace.txt", "$HOME.txt", "quo\"te'.txt", "é.txt"]


def _base() -> Image:
    return Image.from_base(BASE).clone(name="hostile")


@pytest.mark.parametrize("name", GLOB_NAMES)
def test_any_legal_file_name_copies_as_a_source_file(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(b"payload")
    (tmp_path / "other.py").write_bytes(b"must not be copied")
    fake = FakeBuilder()
    result = flyte_images.build(_base().with_source_file(tmp_path / name, dst="/app"), builder=fake, quiet=True)
    assert fake.store[result.uri].files == {f"/app/{name}": b"payload"}


@pytest.mark.parametrize("name", ["pkg[1]", "p*", "d\\e", "sp ace"])
def test_any_legal_folder_name_copies_as_a_source_folder(name: str, tmp_path: Path) -> None:
    write_tree(tmp_path / name, {"m.py": (b"m", 0o644)})
    fake = FakeBuilder()
    result = flyte_images.build(_base().with_source_folder(tmp_path / name, dst="/app"), builder=fake, quiet=True)
    assert fake.store[result.uri].files == {f"/app/{name}/m.py": b"m"}


def test_dot_dot_as_a_folder_means_its_real_name_and_stays_under_dst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    write_tree(project, {"code/inner.py": (b"i", 0o644), "top.py": (b"t", 0o644)})
    monkeypatch.chdir(project / "code")
    image = _base().with_source_folder(Path(".."), dst="/app")
    fake = FakeBuilder()
    result = flyte_images.build(image, builder=fake, quiet=True)
    files = set(fake.store[result.uri].files)
    assert files == {"/app/project/top.py", "/app/project/code/inner.py"}
    assert 'COPY ["_fi/0/", "/app/"]' in result.dockerfile


def test_the_root_folder_needs_copy_contents_only() -> None:
    with pytest.raises(flyte_images.InvalidLayerArgument, match="copy_contents_only"):
        _base().with_source_folder(Path("/"))


def test_a_tree_500_folders_deep_is_walked_and_staged(tmp_path: Path) -> None:
    path = tmp_path / "deep"
    rel = "/".join(["d"] * 500)
    (path / rel).mkdir(parents=True)
    (path / rel / "leaf.txt").write_bytes(b"bottom")
    fake = FakeBuilder()
    result = flyte_images.build(_base().with_source_folder(path, dst="/app"), builder=fake, quiet=True)
    assert fake.store[result.uri].files == {f"/app/deep/{rel}/leaf.txt": b"bottom"}


def test_an_absolute_requirements_include_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r /etc/shared-requirements.txt\nsix\n")
    image = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_requirements(
        tmp_path / "requirements.txt"
    )
    with pytest.raises(SourceError, match=r"/etc/shared-requirements\.txt.*absolute path"):
        _ = image.identifier


def test_build_output_into_a_missing_folder_is_refused_before_anything_builds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images.py").write_text("from flyte_images import Image\nimg = Image.from_base('x:1')\n")
    code = main(["build", str(tmp_path / "images.py"), "--output", str(tmp_path / "nope" / "cache.json")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_a_bogus_platform_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images.py").write_text("from flyte_images import Image\nimg = Image.from_base('x:1')\n")
    assert main(["build", str(tmp_path / "images.py"), "--platform", "linux/z80"]) == 2
    assert "linux/z80" in capsys.readouterr().err


def test_dockerfile_context_pointing_at_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"img = Image.from_base('x:1').clone(name='a').with_source_file(Path({str(tmp_path / 'images.py')!r}))\n"
    )
    (tmp_path / "afile").write_text("x")
    assert main(["dockerfile", f"{tmp_path / 'images.py'}:img", "--context", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err


_SLOW_BUILD = """
import sys, time
from pathlib import Path
import flyte_images
from flyte_images import Image
from flyte_images._files import staging as _stage
from flyte_images.testing import FakeBuilder

real = _stage.Snapshot._copy
def slow(self, dfd, name, target, what):
    result = real(self, dfd, name, target, what)
    print("copied", name, flush=True)
    time.sleep(0.2)
    return result
_stage.Snapshot._copy = slow
image = Image.from_base("flyte-images/busybox:test").clone(name="hostile")
image = image.with_source_folder(Path(sys.argv[1]), dst="/app")
flyte_images.build(image, builder=FakeBuilder(), quiet=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_build_killed_while_staging_leaves_nothing_the_next_build_trips_on(sig: int, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {f"f{i}.txt": (f"{i}".encode(), 0o644) for i in range(20)})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SLOW_BUILD), str(src)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline().startswith(b"copied")
    proc.send_signal(sig)
    proc.wait(timeout=30)
    (src / "f1.txt").write_bytes(b"edited after the kill")
    fake = FakeBuilder()
    result = flyte_images.build(_base().with_source_folder(src, dst="/app"), builder=fake, quiet=True)
    files = fake.store[result.uri].files
    assert files["/app/src/f1.txt"] == b"edited after the kill" and len(files) == 20
    (staging,) = stage_module.staging_root().iterdir()
    assert not [p for p in staging.rglob("*") if p.name.endswith(".staging")]
