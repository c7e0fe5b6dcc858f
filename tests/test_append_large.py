"""Large files on the append path: layer tarballs are made as streams in constant memory (the
same bytes as ever), an 8 GiB file is appended by a process that stays under 300 MB, a layer of
320 MiB is uploaded from its spool by a process that stays well under its size: a file part of any
size is appended, never sent to the engine for its size."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import runpy
import shutil
import subprocess
import sys
import tarfile
import uuid
import zlib
from pathlib import Path

import httpx
import pytest
from engine_support import BUSYBOX, remove_image

import flyte_images
from flyte_images import Image
from flyte_images._append import copy_layer, engine_part
from flyte_images._append import tarball as tarball_module
from flyte_images._append.tarball import Folder
from flyte_images._plan.plan import plan

TIME = 946_684_800
GIB = 2**30
MAX_RSS = 300 * 2**20
STREAMED = 320 * 2**20  # a file of random bytes: its layer, spooled to disk, is as big
STREAMED_MAX_RSS = STREAMED * 3 // 4  # a process that held the layer (once, let alone copied) would be over
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)

# The digests the layer tarballs of `layer_folder` had when they were made in memory in one
# piece: streaming them must not change a byte (an unchanged layer is never uploaded again).
GOLDEN = {
    "plain": (
        "sha256:b94fb0a19fe3c749d7dce0444c6c1752ae3158ebc6164ab74731b9a25fda51c5",
        "sha256:6d5a810e9241d69e3dd91644d0f58f582003df8ac86187ec8f7cc04d60dc691f",
        3157691,
    ),
    "owned": (
        "sha256:33227427b17ceccffb4aff2c647d4d4cfc2006fa8daa241ea121949fa8744c88",
        "sha256:eeea0109f46a55a598ded49c6778b1d3baaa7b6d69266461d2d12d4d50fbc4e6",
        3158118,
    ),
}


def layer_folder(root: Path) -> Path:
    """A staged folder with files over a chunk and of odd sizes, an empty file and folder, pax
    names and link targets; modes and times set, so its layer never depends on the machine."""
    folder = root / "_fi" / "3"
    rng = random.Random(11)
    files = {
        "pkg/a.py": (b"a\n", 0o644),
        "pkg/run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "pkg/empty": (b"", 0o600),
        "pkg/sub/b.txt": (b"b" * 513, 0o644),
        "data/random.bin": (rng.randbytes(3 * 2**20 + 123), 0o644),
        "data/zeros.bin": (bytes(2 * 2**20 + 1), 0o640),
        "pkg/" + "n" * 120 + ".py": (b"x" * 700, 0o644),
        "pkg/ünïcode.txt": (b"u\n", 0o644),
    }
    for rel, (data, mode) in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    os.symlink("a.py", folder / "pkg" / "link.py")
    os.symlink("t" * 150, folder / "pkg" / "far")
    (folder / "empty-dir").mkdir()
    for sub in ("pkg", "pkg/sub", "empty-dir"):
        (folder / sub).chmod(0o755)
    (folder / "data").chmod(0o750)
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (TIME, TIME), follow_symlinks=False)
    return folder


def both_layers(folder: Path) -> dict[str, tarball_module.LayerBlob]:
    home = {"home/flyte": Folder(0o700, 1000, 1000)}
    plain, _ = copy_layer(folder, "/opt/app")
    owned, _ = copy_layer(folder, "/home/flyte/" + "d" * 90, owner=(1000, 1001), folders=home, created_by="COPY x")
    return {"plain": plain, "owned": owned}


def test_layers_are_streamed_and_spooled_with_the_bytes_they_always_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = layer_folder(tmp_path)
    for name, blob in both_layers(folder).items():
        assert (blob.digest, blob.diff_id, blob.size) == GOLDEN[name]
        assert not blob.spooled  # a few MiB: kept in memory
    # Read and compressed a few bytes at a time, and spooled to disk: still the same bytes.
    monkeypatch.setattr(tarball_module, "CHUNK", 4099)
    monkeypatch.setattr(tarball_module, "SPOOL_MEMORY", 1000)
    for name, blob in both_layers(folder).items():
        assert blob.spooled and (blob.digest, blob.diff_id, blob.size) == GOLDEN[name]
        content = blob.content()
        assert b"".join(blob.chunks(65536)) == content and len(content) == blob.size
        assert "sha256:" + hashlib.sha256(content).hexdigest() == blob.digest
        assert "sha256:" + hashlib.sha256(zlib.decompress(content, 31)).hexdigest() == blob.diff_id
        blob.close()
    # The spool is an unnamed file: nothing is left in the cache folder, even by a killed build.
    cache = Path(os.environ["FLYTE_IMAGES_CACHE_DIR"])
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def _project(root: Path, registry: str, name: str) -> tuple[Path, Path, Image]:
    """A source folder with one small file, and a Python file defining `image` (busybox, a RUN,
    the folder copied to /app), for a child process to build."""
    src = root / "proj"
    src.mkdir()
    (src / "a.txt").write_text("hi\n")
    file = root / "images.py"
    file.write_text(
        "from flyte_images import Image\n\n"
        f"image = Image.from_base({BUSYBOX!r}).clone(name={name!r}, registry={registry!r})"
        f".with_commands(['echo {uuid.uuid4().hex} > /marker']).with_source_folder({str(src)!r}, dst='/app')\n"
    )
    image = runpy.run_path(str(file))["image"]
    assert isinstance(image, Image)
    return src, file, image


# The build an 8 GiB file goes through, in its own process so its peak memory can be read.
CHILD = r"""
import json, resource, runpy, sys

# A guard, not the measure: a layer held in memory again fails here with MemoryError, instead
# of taking the memory of everything else on the machine.
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import flyte_images

image = runpy.run_path(sys.argv[1])["image"]
result = flyte_images.build(image, builder="append", quiet=True)
print(json.dumps({"path": result.path, "uri": result.uri, "reason": result.reason}))
"""


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    """The members of a tar whose headers are within its first bytes, `data`."""
    out: dict[str, tarfile.TarInfo] = {}
    with contextlib.suppress(tarfile.ReadError, EOFError), tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for member in tar:  # the last one's content is cut off: stop there
            out[member.name] = member
    return out


def _layer_start(registry: str, uri: str) -> tuple[int, dict[str, tarfile.TarInfo]]:
    """The top layer of `uri` in the registry: its size, and the members its first bytes list."""
    repository, tag = uri.removeprefix(f"{registry}/").rsplit(":", 1)
    base = f"http://{registry}/v2/{repository}"
    manifest = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT}).json()
    top = manifest["layers"][-1]
    unpack, tar = zlib.decompressobj(31), b""
    with httpx.stream("GET", f"{base}/blobs/{top['digest']}", follow_redirects=True) as answer:
        for chunk in answer.iter_bytes(65536):
            tar += unpack.decompress(chunk, 1 << 20)
            if len(tar) >= 1 << 20:
                break
    return int(top["size"]), _members(tar)


def _build_in_child(tmp_path: Path, file: Path) -> tuple[int, dict[str, str]]:
    """The build of `file`'s image in a process of its own: its peak memory (bytes) and result."""
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(file)], stdout=out, stderr=err)
        # The usage of this child alone (RUSAGE_CHILDREN would add every process this test
        # session ran before, docker's among them); ru_maxrss is in KiB on Linux.
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, (tmp_path / "err").read_text()[-3000:]
    result: dict[str, str] = json.loads((tmp_path / "out").read_text())
    return usage.ru_maxrss * 1024, result


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_an_8_gib_file_is_appended_by_a_process_under_300_mb(tmp_path: Path, local_registry: str) -> None:
    src, file, image = _project(tmp_path, local_registry, "fi-test-append-large")
    engine_uri = plan(engine_part(image)).uri
    cache = Path(os.environ["FLYTE_IMAGES_CACHE_DIR"])
    try:
        first = flyte_images.build(image, builder="append", quiet=True)  # the engine part, built once
        assert first.path == "append"
        with open(src / "model.bin", "wb") as out:
            os.truncate(out.fileno(), 8 * GIB)  # sparse: no disk for the source itself
        peak, result = _build_in_child(tmp_path, file)
        assert result["path"] == "append", result
        assert peak < MAX_RSS, f"the append build peaked at {peak / 2**20:.0f} MiB"
        # The registry checked the upload against its digest; the layer lists the whole file.
        size, listed = _layer_start(local_registry, result["uri"])
        assert size < 100 * 2**20  # zeros compress: the layer itself is small
        # 8 GiB is one byte past what a ustar header holds: a pax header gives the size.
        assert listed["app/proj/model.bin"].size == 8 * GIB and listed["app/proj/a.txt"].size == 3
    finally:
        (src / "model.bin").unlink(missing_ok=True)
        shutil.rmtree(cache / "staging", ignore_errors=True)  # the staged copy is not sparse
        remove_image(engine_uri)


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_layer_of_hundreds_of_mib_is_uploaded_by_a_process_that_never_holds_it(
    tmp_path: Path, local_registry: str
) -> None:
    src, file, image = _project(tmp_path, local_registry, "fi-test-append-stream")
    engine_uri = plan(engine_part(image)).uri
    cache = Path(os.environ["FLYTE_IMAGES_CACHE_DIR"])
    try:
        first = flyte_images.build(image, builder="append", quiet=True)  # the engine part, built once
        assert first.path == "append"
        with open(src / "weights.bin", "wb") as out:
            for _ in range(STREAMED // 2**20):
                out.write(os.urandom(2**20))  # random: the layer is as big as the file
        peak, result = _build_in_child(tmp_path, file)
        assert result["path"] == "append", result
        assert peak < STREAMED_MAX_RSS, f"the append build peaked at {peak / 2**20:.0f} MiB"
        # The registry checked the upload against its digest; the layer lists the whole file.
        size, listed = _layer_start(local_registry, result["uri"])
        assert size > STREAMED and listed["app/proj/weights.bin"].size == STREAMED
    finally:
        (src / "weights.bin").unlink(missing_ok=True)
        shutil.rmtree(cache / "staging", ignore_errors=True)
        remove_image(engine_uri)
