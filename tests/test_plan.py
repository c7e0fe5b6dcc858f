"""The build plan: one read of every file, and a tag that always names the bytes that were built.

These run on the fake backend (flyte_images.testing), which records exactly what it was sent; the
same invariant is checked on the real engine, under churn, in test_engine_churn.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import Image, InvalidLayerArgument, SourceNotFoundError
from flyte_images._build import engine_route as route_module
from flyte_images._files import staging as stage_module
from flyte_images._image import identity as identity_module
from flyte_images._plan import plan as plan_module
from flyte_images.builders.base import IDENTITY_LABEL
from flyte_images.testing import FakeBuilder, FakeImage

BASE = "flyte-images/busybox:test"


def folder_image(src: Path) -> Image:
    return Image.from_base(BASE).clone(name="plan-test").with_source_folder(src, dst="/app").with_env_vars({"A": "1"})


def identifier_of_contents(image_files: FakeImage, prefix: str, description: Path, tmp: Path) -> str:
    """The identifier of the bytes inside a built image: its files under `prefix` written back
    to a folder, and the same image description computed over that folder."""
    check = tmp / "check" / description.name
    for path, data in image_files.files.items():
        if path.startswith(prefix + "/"):
            target = check / path[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(image_files.modes[path])
    check.mkdir(parents=True, exist_ok=True)
    return folder_image(check).identifier


def assert_consistent(result: flyte_images.ImageBuild, fake: FakeBuilder, src: Path, tmp: Path) -> None:
    built = fake.store[result.uri]
    tag = result.uri.rsplit(":", 1)[1]
    assert built.labels[IDENTITY_LABEL] == tag
    assert identifier_of_contents(built, f"/app/{src.name}", src, tmp) == tag


def test_an_edit_after_the_uri_was_read_builds_what_is_there(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"one\n", 0o644), "pkg/b.py": (b"two\n", 0o755)})
    image = folder_image(src)
    seen_before = image.uri
    (src / "a.py").write_bytes(b"edited after the uri was shown\n")
    fake = FakeBuilder()
    result = flyte_images.build(image, builder=fake, quiet=True)
    assert result.built and result.uri != seen_before
    assert fake.store[result.uri].files["/app/src/a.py"] == b"edited after the uri was shown\n"
    assert_consistent(result, fake, src, tmp_path)


def test_an_edit_while_staging_is_tagged_for_the_staged_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"original\n", 0o644), "b.py": (b"bee\n", 0o644)})
    real_copy = stage_module.Snapshot._copy

    def copy_then_edit(self: stage_module.Snapshot, dfd: int | None, name: str, target: Path, what: str):  # type: ignore[no-untyped-def]
        copied = real_copy(self, dfd, name, target, what)
        if name == "a.py":
            (src / "a.py").write_bytes(b"edited while the build was staging\n")  # after it was read
        return copied

    monkeypatch.setattr(stage_module.Snapshot, "_copy", copy_then_edit)
    fake = FakeBuilder()
    result = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert fake.store[result.uri].files["/app/src/a.py"] == b"original\n"
    assert_consistent(result, fake, src, tmp_path)
    monkeypatch.setattr(stage_module.Snapshot, "_copy", real_copy)
    again = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert again.built and again.uri != result.uri  # the edit is seen by the next build
    assert_consistent(again, fake, src, tmp_path)


def test_a_file_vanishing_while_staging_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a\n", 0o644), "b.py": (b"b\n", 0o644)})
    real_copy = stage_module.Snapshot._copy

    def delete_b_first(self: stage_module.Snapshot, dfd: int | None, name: str, target: Path, what: str):  # type: ignore[no-untyped-def]
        if name == "b.py":
            (src / "b.py").unlink(missing_ok=True)
        return real_copy(self, dfd, name, target, what)

    monkeypatch.setattr(stage_module.Snapshot, "_copy", delete_b_first)
    fake = FakeBuilder()
    with pytest.raises(SourceNotFoundError, match=r"b\.py"):
        flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert not fake.store


def test_a_from_dockerfile_build_is_tagged_for_the_staged_context(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write_tree(
        ctx,
        {
            "Dockerfile": (f"FROM {BASE}\nCOPY . /app\n".encode(), 0o644),
            "data.txt": (b"v1\n", 0o644),
            "skip.log": (b"ignored\n", 0o644),
            ".dockerignore": (b"*.log\n", 0o644),
        },
    )
    image = Image.from_dockerfile(ctx / "Dockerfile", registry="", name="plan-df")
    shown = image.uri
    (ctx / "data.txt").write_bytes(b"v2\n")
    fake = FakeBuilder()
    result = flyte_images.build(image, builder=fake, quiet=True)
    built = fake.store[result.uri]
    assert result.uri != shown and built.files["/app/data.txt"] == b"v2\n"
    assert "/app/skip.log" not in built.files and "/app/.dockerignore" not in built.files
    tag = result.uri.rsplit(":", 1)[1]
    assert built.labels[IDENTITY_LABEL] == tag
    check = tmp_path / "check"
    for path, data in built.files.items():
        (check / path[len("/app/") :]).parent.mkdir(parents=True, exist_ok=True)
        (check / path[len("/app/") :]).write_bytes(data)
        (check / path[len("/app/") :]).chmod(built.modes[path])
    assert Image.from_dockerfile(check / "Dockerfile", registry="", name="plan-df").identifier == tag


def _counting_reads(src: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[int]]:
    """Count the opens for reading of files under `src`, and the identities computed."""
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        resolved = os.readlink(f"/proc/self/fd/{fd}")
        if resolved.startswith(str(src)) and not os.path.isdir(resolved) and not flags & os.O_WRONLY:
            opened.append(resolved)
        return fd

    identities: list[int] = []
    real_identity = identity_module.Identity
    monkeypatch.setattr(identity_module, "Identity", lambda *a: identities.append(1) or real_identity(*a))
    monkeypatch.setattr(os, "open", counting_open)
    return opened, identities


def test_an_existing_image_is_decided_from_one_read_and_nothing_is_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAT_CACHE", "0")  # the cold case: every file must be read
    src = tmp_path / "src"
    files = {f"m{i}.py": (f"print({i})\n".encode(), 0o644) for i in range(20)}
    files.update({"sub/x.txt": (b"x", 0o600), "req.txt": (b"six\n", 0o644)})
    write_tree(src, files)
    image = folder_image(src).with_requirements(src / "req.txt").with_source_file(src / "m1.py", dst="/one")
    fake = FakeBuilder()
    assert flyte_images.build(image, builder=fake, quiet=True).built
    for staging in stage_module.staging_root().iterdir():
        shutil.rmtree(staging)
    opened, identities = _counting_reads(src, monkeypatch)
    again = flyte_images.build(image, builder=fake, quiet=True)
    monkeypatch.setattr(os, "open", os.open)
    assert not again.built
    reads = {path: opened.count(path) for path in opened}
    # m1.py and req.txt are named by two layers each (the folder and their own layer): read once per layer
    assert reads[str(src / "m1.py")] == 2 and reads[str(src / "req.txt")] == 2
    others = {p: n for p, n in reads.items() if not p.endswith(("/m1.py", "/req.txt"))}
    assert len(others) == 20 and set(others.values()) == {1}
    assert len(identities) == 1
    assert list(stage_module.staging_root().iterdir()) == []  # nothing copied for an image that exists


def test_a_build_stages_what_it_read_and_builds_the_staged_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAT_CACHE", "0")
    src = tmp_path / "src"
    write_tree(src, {f"m{i}.py": (f"print({i})\n".encode(), 0o644) for i in range(5)})
    image = folder_image(src)
    opened, identities = _counting_reads(src, monkeypatch)
    fake = FakeBuilder()
    result = flyte_images.build(image, builder=fake, quiet=True)
    monkeypatch.setattr(os, "open", os.open)
    # one hashing read to decide, one copying read to stage (the staged copies are what is built)
    assert {opened.count(p) for p in opened} == {2} and len(set(opened)) == 5
    assert len(identities) == 2
    assert_consistent(result, fake, src, tmp_path)


def test_a_file_edited_between_the_decision_and_the_staging_is_asked_about_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"one\n", 0o644)})
    fake = FakeBuilder()
    first = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    # The image with a.py = "two" exists; the build reads "one" (missing), then a.py becomes "two"
    # before it is staged: the staged bytes are an image that exists, so nothing is built.
    (src / "a.py").write_bytes(b"two\n")
    second = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    (src / "a.py").write_bytes(b"three\n")
    real_staged = plan_module.staged_plan

    @contextlib.contextmanager
    def edited_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        (src / "a.py").write_bytes(b"two\n")
        with real_staged(*args, **kwargs) as staged:
            yield staged

    monkeypatch.setattr(route_module, "staged_plan", edited_first)
    third = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert first.built and second.built and not third.built
    assert third.uri == second.uri and third.reason == "already in the local engine"


def test_a_second_build_copies_nothing_and_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_module, "_racy", lambda key, now: False)  # ctime cannot be set back
    src = tmp_path / "src"
    write_tree(src, {f"f{i}.py": (b"x" * i, 0o644) for i in range(10)})
    fake = FakeBuilder()
    first = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert len(list(stage_module.staging_root().iterdir())) == 1
    copies: list[str] = []
    real_copy = stage_module.Snapshot._copy

    def counting(self: stage_module.Snapshot, dfd: int | None, name: str, target: Path, what: str):  # type: ignore[no-untyped-def]
        copies.append(name)
        return real_copy(self, dfd, name, target, what)

    monkeypatch.setattr(stage_module.Snapshot, "_copy", counting)
    second = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert first.built and not second.built and second.uri == first.uri
    assert second.reason == "already in the local engine" and copies == []
    (src / "f3.py").write_bytes(b"changed")
    third = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    assert third.built and copies == ["f3.py"]


def test_staging_is_updated_in_place_and_removes_what_the_plan_no_longer_has(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"keep.py": (b"k", 0o644), "gone.py": (b"g", 0o644), "d/inner.py": (b"i", 0o644)})
    fake = FakeBuilder()
    flyte_images.build(folder_image(src), builder=fake, quiet=True)
    (src / "gone.py").unlink()
    (src / "d" / "inner.py").unlink()
    (src / "d").rmdir()
    result = flyte_images.build(folder_image(src), builder=fake, quiet=True)
    (staging,) = stage_module.staging_root().iterdir()
    staged = sorted(str(p.relative_to(staging / "context")) for p in (staging / "context").rglob("*"))
    assert staged == ["_fi", "_fi/0", "_fi/0/src", "_fi/0/src/keep.py"]
    assert set(fake.store[result.uri].files) == {"/app/src/keep.py"}
    (kept,) = [p for p in (staging / "context").rglob("*") if p.is_file()]
    assert kept.stat().st_mtime_ns == stage_module.content_mtime_ns(_sha(b"k"))
    assert {p.stat().st_mtime for p in (staging / "context").rglob("*") if p.is_dir()} == {stage_module.FIXED_MTIME}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_dockerfile_and_id_print_from_the_same_plan(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    image = folder_image(src)
    made = plan_module.plan(image)
    assert made.uri == image.uri and made.labels == {IDENTITY_LABEL: made.identifier}
    assert [s.dest for s in made.manifest] == ["_fi/0/src/a.py"]
    assert made.manifest[0].entry.size == 1 and made.manifest[0].entry.mode == 0o644


def test_a_platform_uv_has_no_build_for_stops_a_dry_run_and_a_build_before_anything_is_built() -> None:
    image = Image.from_debian_base(name="armv6", platform=("linux/arm/v6",)).with_pip_packages("requests")
    assert len(image.identifier) == 32  # the identifier needs no uv binary
    fake = FakeBuilder()
    for dry_run in (True, False):
        with pytest.raises(InvalidLayerArgument, match=r"uv has no build for linux/arm/v6"):
            flyte_images.build(image, builder=fake, dry_run=dry_run, push=False, quiet=True)
    assert fake.requests == []
