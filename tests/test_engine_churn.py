"""Builds while another thread keeps editing the copied files, on the real engine.

For every build reported as built: the reported uri's tag == the engine's tag (the image exists
under it) == the identity label == the identifier of the bytes inside the image (the copied
folder exported from a container and hashed again as the same image description). A build may
be refused only with a clear error naming a file that vanished; at most a third may be.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import write_tree
from engine_support import BUSYBOX

import flyte_images
from flyte_images import Image, SourceError
from flyte_images.builders.base import IDENTITY_LABEL

pytestmark = pytest.mark.engine


class Churn:
    """Rewrites a file in each folder every 50 ms (truncate and write, not atomic), and makes a
    file appear and vanish again, until stopped."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for i in itertools.count():
            if self.stop.wait(0.05):
                return
            for folder in self.folders:
                with open(folder / "churn.txt", "w") as handle:
                    handle.write(f"edit {i}\n" * (i % 7 + 1))
                transient = folder / "transient.txt"
                if i % 2:
                    transient.write_text(f"{i}\n")
                else:
                    transient.unlink(missing_ok=True)

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def _export(uri: str, path: str, dest: Path) -> None:
    container = _docker("create", uri, "true")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _docker("cp", f"{container}:{path}", str(dest))
    finally:
        _docker("rm", container)


def _pulled_and_labelled(uri: str, exports: dict[str, Path]) -> list[Path]:
    """Pull `uri` from its registry, check that its identity label is its tag, and copy the
    folders `exports` names out of it; the copies, in order."""
    _docker("pull", "-q", uri)
    tag = uri.rsplit(":", 1)[1]
    assert f'"{IDENTITY_LABEL}":"{tag}"' in _docker("image", "inspect", uri, "--format", "{{json .Config.Labels}}")
    for path, dest in exports.items():
        _export(uri, path, dest)
    return list(exports.values())


def test_builds_during_edits_report_only_images_whose_tag_label_and_bytes_agree(engine: None, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    src = tmp_path / "src"
    ctx = tmp_path / "ctx"
    write_tree(
        src, {"main.py": (b"print(1)\n", 0o644), "pkg/mod.py": (b"x = 1\n", 0o755), "churn.txt": (b"0\n", 0o644)}
    )
    dockerfile = f"FROM {BUSYBOX}\nCOPY . /app\n".encode()
    write_tree(ctx, {"Dockerfile": (dockerfile, 0o644), "data.txt": (b"d\n", 0o644), "churn.txt": (b"0\n", 0o644)})

    def folder_image(folder: Path) -> Image:
        return Image.from_base(BUSYBOX).clone(name=f"churn-src-{run}").with_source_folder(folder, dst="/app")

    def dockerfile_image(folder: Path) -> Image:
        return Image.from_dockerfile(folder / "Dockerfile", registry="", name=f"churn-df-{run}")

    outcomes: list[tuple[str, str]] = []
    with Churn([src, ctx]):
        for i in range(16):
            kind, image = ("src", folder_image(src)) if i % 2 == 0 else ("df", dockerfile_image(ctx))
            try:
                result = flyte_images.build(image, quiet=True, push=False)
            except SourceError as exc:
                assert "transient.txt" in str(exc)
                outcomes.append((kind, "refused"))
                continue
            outcomes.append((kind, result.uri))
            time.sleep(0.03)
    built = [(kind, uri) for kind, uri in outcomes if uri != "refused"]
    print(f"churn: {len(built)} built, {len(outcomes) - len(built)} refused, {len({u for _k, u in built})} tags")
    assert len(outcomes) - len(built) <= len(outcomes) // 3, outcomes
    assert len({uri for _kind, uri in built}) > 2  # the edits were really seen
    for n, (kind, uri) in enumerate(built):
        tag = uri.rsplit(":", 1)[1]
        labels = _docker("image", "inspect", uri, "--format", "{{json .Config.Labels}}")
        assert f'"{IDENTITY_LABEL}":"{tag}"' in labels
        check = tmp_path / "check" / str(n)
        if kind == "src":
            _export(uri, "/app/src", check / "src")
            assert folder_image(check / "src").identifier == tag
        else:
            _export(uri, "/app", check / "ctx")
            assert dockerfile_image(check / "ctx").identifier == tag
    _docker("image", "rm", "-f", *{uri for _kind, uri in built})


def test_an_edit_that_keeps_the_size_reaches_the_image(engine: None, tmp_path: Path) -> None:
    """The staging folder is reused between builds; BuildKit resends a file only when its size
    or time changed, so staged times depend on the content (a fixed time would ship old bytes)."""
    src = tmp_path / "src"
    write_tree(src, {"same.txt": (b"AAAA", 0o644)})
    image = Image.from_base(BUSYBOX).clone(name=f"churn-size-{uuid.uuid4().hex[:8]}").with_source_folder(src, "/app")
    first = flyte_images.build(image, quiet=True, push=False)
    (src / "same.txt").write_bytes(b"BBBB")
    second = flyte_images.build(image, quiet=True, push=False)
    command = ["docker", "run", "--rm", second.uri, "cat", "/app/src/same.txt"]
    shown = subprocess.run(command, check=False, capture_output=True)
    assert shown.stdout == b"BBBB" and first.uri != second.uri
    _docker("image", "rm", "-f", first.uri, second.uri)


def test_appended_builds_during_edits_agree_with_their_tags(engine: None, local_registry: str, tmp_path: Path) -> None:
    """The append path under edits: every pushed uri names an image whose label and copied bytes
    give that tag (the layer tarball is made from the staged bytes the identifier covers)."""
    run = uuid.uuid4().hex[:8]
    src = tmp_path / "src"
    write_tree(src, {"main.py": (b"print(1)\n", 0o644), "churn.txt": (b"0\n", 0o644)})

    def image(folder: Path) -> Image:
        return (
            Image.from_base(BUSYBOX)
            .clone(name=f"churn-append-{run}", registry=local_registry)
            .with_commands(["true"])
            .with_source_folder(folder, dst="/app")
        )

    outcomes: list[str] = []
    with Churn([src]):
        for _ in range(10):
            try:
                result = flyte_images.build(image(src), quiet=True)
            except SourceError as exc:
                assert "transient.txt" in str(exc)
                outcomes.append("refused")
                continue
            assert result.path == "append"
            outcomes.append(result.uri)
            time.sleep(0.03)
    built = [uri for uri in outcomes if uri != "refused"]
    assert len(outcomes) - len(built) <= len(outcomes) // 3, outcomes
    assert len(set(built)) > 2  # the edits were really seen
    for n, uri in enumerate(built):
        (src_copy,) = _pulled_and_labelled(uri, {"/app/src": tmp_path / "check" / str(n) / "src"})
        assert image(src_copy).identifier == uri.rsplit(":", 1)[1]
    _docker("image", "rm", "-f", *set(built))


def test_appended_builds_with_a_missing_engine_part_during_edits_agree_with_their_tags(
    engine: None, local_registry: str, tmp_path: Path
) -> None:
    """The append route when every edit also changes the engine part (a folder copied before a
    RUN): the engine part is built from the same staged plan as the file part, so no build is
    refused for files that changed between two reads, and every pushed uri names an image whose
    label, engine-part bytes and file-part bytes give that tag."""
    run = uuid.uuid4().hex[:8]
    early, late = tmp_path / "early", tmp_path / "late"
    write_tree(early, {"lib.py": (b"x = 1\n", 0o644), "churn.txt": (b"0\n", 0o644)})
    write_tree(late, {"main.py": (b"print(1)\n", 0o644), "churn.txt": (b"0\n", 0o644)})

    def image(first: Path, second: Path) -> Image:
        return (
            Image.from_base(BUSYBOX)
            .clone(name=f"churn-engine-part-{run}", registry=local_registry)
            .with_source_folder(first, dst="/early")
            .with_commands(["true"])
            .with_source_folder(second, dst="/app")
        )

    outcomes: list[str] = []
    with Churn([early, late]):
        for _ in range(6):
            try:
                result = flyte_images.build(image(early, late), quiet=True)
            except SourceError as exc:
                assert "transient.txt" in str(exc)
                outcomes.append("refused")
                continue
            assert result.path == "append"
            outcomes.append(result.uri)
    built = [uri for uri in outcomes if uri != "refused"]
    assert len(outcomes) - len(built) <= len(outcomes) // 2, outcomes
    assert len(set(built)) > 1  # the edits were really seen
    for n, uri in enumerate(built):
        check = tmp_path / "check" / str(n)
        copies = _pulled_and_labelled(uri, {"/early/early": check / "early", "/app/late": check / "late"})
        assert image(*copies).identifier == uri.rsplit(":", 1)[1]
    _docker("image", "rm", "-f", *set(built))
