"""The file part of an image without an engine: deterministic layer tarballs, the config
changes and the split of a plan (no engine, no registry)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from flyte_images import Image
from flyte_images._append import append_async, copy_layer, engine_part, file_part_start, merge_env, new_config
from flyte_images._append.image import OCI_LAYER, OCI_MANIFEST
from flyte_images._append.part import has_file_part
from flyte_images._append.tarball import Folder
from flyte_images._errors import BuildError, RegistryError
from flyte_images._registry.wire import INDEX_TYPES


def make_folder(root: Path) -> Path:
    folder = root / "_fi" / "1"
    (folder / "pkg" / "sub").mkdir(parents=True)
    (folder / "pkg" / "a.py").write_text("a\n")
    (folder / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (folder / "pkg" / "run.sh").chmod(0o755)
    (folder / "pkg" / "sub" / "b.txt").write_text("b\n")
    os.symlink("a.py", folder / "pkg" / "link.py")
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (946_684_800, 946_684_800), follow_symlinks=False)
    return folder


def members(data: bytes) -> list[tuple[str, str, int, int, int, str]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return [(m.name, m.type.decode(), m.mode, m.uid, m.gid, m.linkname) for m in tar.getmembers()]


def test_copy_layer_is_deterministic(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first, again = copy_layer(folder, "/opt/app")[0], copy_layer(folder, "/opt/app/")[0]
    assert (first.digest, first.diff_id, first.data) == (again.digest, again.diff_id, again.data)
    (folder / "pkg" / "a.py").chmod(0o600)
    changed = copy_layer(folder, "/opt/app")[0]
    assert changed.digest != first.digest and changed.diff_id != first.diff_id


def test_copy_layer_reads_back_as_tarfile_writes_it(tmp_path: Path) -> None:
    """Long and non-ASCII names and link targets (pax headers), ids and sizes: every member reads
    back with what a tar that `tarfile` writes of the same entries holds."""
    folder = make_folder(tmp_path)
    (folder / "pkg" / ("n" * 120 + ".py")).write_bytes(b"x" * 700)
    (folder / "pkg" / "ünïcode.txt").write_text("u\n")
    os.symlink("t" * 150, folder / "pkg" / "far")
    blob = copy_layer(folder, "/home/flyte/" + "d" * 90, owner=(1000, 1001))[0]
    ours = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.data)))  # noqa: SIM115 - in memory
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in ours.getmembers():
            content = ours.extractfile(member) if member.isfile() else None
            tar.addfile(member, content)
    reference.seek(0)
    theirs = tarfile.open(fileobj=reference)  # noqa: SIM115 - in memory

    def read(archive: tarfile.TarFile) -> list[tuple[object, ...]]:
        out = []
        for m in archive.getmembers():
            data = archive.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            out.append((m.name, m.type, m.mode, m.uid, m.gid, m.uname, m.mtime, m.size, m.linkname, data))
        return out

    assert read(ours) == read(theirs)
    names = [m[0] for m in read(ours)]
    assert "home/flyte/" + "d" * 90 + "/pkg/" + "n" * 120 + ".py" in names and any("ünïcode" in n for n in names)
    assert ("t" * 150) in [m[8] for m in read(ours)]
    assert len(gzip.decompress(blob.data)) % 10240 == 0


def test_copy_layer_lays_out_the_copy(tmp_path: Path) -> None:
    blob = copy_layer(make_folder(tmp_path), "/opt/app")[0]
    listing = {name: rest for name, *rest in members(blob.data)}
    names = list(listing)
    assert names == sorted(names, key=lambda n: n.split("/"))  # parents before children, sorted
    # Every folder on the way is listed (an unpacker would make an unlisted one root 0755); not
    # given, they are made as the copy makes them: 0755, the copy's owner.
    assert names[:3] == ["opt", "opt/app", "opt/app/pkg"]
    assert listing["opt"][:2] == [tarfile.DIRTYPE.decode(), 0o755]
    assert listing["opt/app/pkg/run.sh"][:2] == [tarfile.REGTYPE.decode(), 0o755]
    assert listing["opt/app/pkg/link.py"][0] == tarfile.SYMTYPE.decode()
    assert listing["opt/app/pkg/link.py"][4] == "a.py"
    assert all(uid == 0 and gid == 0 for _t, _m, uid, gid, _l in listing.values())


def test_copy_layer_keeps_the_folders_the_image_has(tmp_path: Path) -> None:
    home = Folder(0o700, 1000, 1000)
    blob = copy_layer(make_folder(tmp_path), "/home/flyte/app", owner=(1000, 1001), folders={"home/flyte": home})[0]
    listing = {name: rest for name, *rest in members(blob.data)}
    assert listing["home/flyte"][:4] == [tarfile.DIRTYPE.decode(), 0o700, 1000, 1000]  # as the image has it
    assert listing["home"][:4] == [tarfile.DIRTYPE.decode(), 0o755, 1000, 1001]  # made by the copy
    assert listing["home/flyte/app/pkg/a.py"][2:4] == [1000, 1001]
    with pytest.raises(BuildError, match="not '/opt/app/x' or one of its parents"):
        copy_layer(make_folder(tmp_path / "b"), "/opt/app/x", folders={"srv": home})[0]


def test_copy_layer_refuses_relative_and_missing(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="relative"):
        copy_layer(make_folder(tmp_path), "app")[0]
    with pytest.raises(BuildError, match="not a staged folder"):
        copy_layer(tmp_path / "nope", "/app")[0]


def test_config_changes_follow_the_dockerfile(tmp_path: Path) -> None:
    assert merge_env(["PATH=/bin", "A=1"], [("A", "2"), ("B", "x=y")]) == ["PATH=/bin", "A=2", "B=x=y"]
    blob = copy_layer(make_folder(tmp_path), "/app", created_by="COPY")[0]
    base: dict[str, Any] = {
        "created": "t",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:0"]},
        "config": {"Env": ["A=1"]},
    }
    config = new_config(base, [blob], env=[("A", "3")], workdir="/app", labels={"k": "v"}, history=["ENV A=3"])
    assert config["rootfs"]["diff_ids"] == ["sha256:0", blob.diff_id]
    assert config["config"] == {"Env": ["A=3"], "WorkingDir": "/app", "Labels": {"k": "v"}}
    assert [h.get("empty_layer", False) for h in config["history"]] == [False, True]
    assert base["rootfs"]["diff_ids"] == ["sha256:0"]  # the base config is left alone


def test_split_keeps_runs_in_the_engine_part(tmp_path: Path) -> None:
    image = (
        Image.from_base("busybox:latest")
        .clone(name="x")
        .with_source_folder(tmp_path, dst="/early")
        .with_commands(["true"])
        .with_source_folder(tmp_path, dst="/app")
        .with_env_vars({"A": "1"})
        .with_workdir("/app")
    )
    assert file_part_start(image) == 2
    assert [layer.KIND for layer in engine_part(image)._layers] == ["source_folder", "commands"]


class FakeRegistry(httpx.AsyncBaseTransport):
    """A fake registry: just enough of the distribution API, in memory, to see what `append`
    sends (the real registry's behaviour is covered by the engine tests)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.sent: list[str] = []  # the sha256 of every blob uploaded

    def put_manifest(self, tag: str, document: dict[str, Any], media_type: str) -> str:
        content = json.dumps(document).encode()
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        self.manifests[tag] = self.manifests[digest] = (content, media_type)
        return digest

    def put_blob(self, content: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        self.blobs[digest] = content
        return digest

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method, path, headers, body = request.method, request.url.path, request.headers, await request.aread()
        self.requests.append(f"{method} {path}")
        if method == "PUT" and "/blobs/uploads/" in path:
            self.sent.append(hashlib.sha256(body).hexdigest())
        kind, _, name = path.removeprefix("/v2/app/").partition("/")
        if kind == "manifests" and method == "GET":
            if name not in self.manifests:
                return _answer(404)
            content, media = self.manifests[name]
            return _answer(200, content, {"Content-Type": media})
        if kind == "manifests" and method == "PUT":
            digest = self.put_blob(body)
            self.manifests[name] = (body, headers["Content-Type"])
            return _answer(201, headers={"Docker-Content-Digest": digest})
        if kind == "blobs" and name == "uploads/" and method == "POST":
            return _answer(202, headers={"Location": "/v2/app/blobs/uploads/u1?state=x"})
        if kind == "blobs" and name.startswith("uploads/") and method == "PUT":
            digest = self.put_blob(body)
            assert request.url.params["digest"] == digest
            return _answer(201)
        if kind == "blobs" and name in self.blobs:
            return _answer(200, self.blobs[name] if method == "GET" else b"")
        return _answer(404)


def _answer(status: int, content: bytes = b"", headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


def fake_base(reg: FakeRegistry, *, attested: bool) -> None:
    config = {"architecture": "amd64", "os": "linux", "created": "t", "config": {"Env": ["PATH=/bin"]}}
    config_digest = reg.put_blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 1},
        "layers": [],
    }
    digest = reg.put_manifest("image", manifest, OCI_MANIFEST)
    if attested:  # one platform pushed by BuildKit with its attestation manifest beside it
        unknown = {"os": "unknown", "architecture": "unknown"}
        entries = [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1, "platform": unknown},
        ]
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": entries}
        reg.put_manifest("base", index, INDEX_TYPES[0])
    else:
        reg.manifests["base"] = reg.manifests["image"]


@pytest.mark.parametrize("attested", [False, True])
def test_append_uploads_missing_blobs_once_and_writes_the_manifest(tmp_path: Path, attested: bool) -> None:
    reg = FakeRegistry()
    fake_base(reg, attested=attested)
    blob = copy_layer(make_folder(tmp_path), "/app")[0]
    transport = reg

    def run(tag: str) -> str:
        work = append_async(
            "localhost:5000/app:base",
            [blob],
            f"localhost:5000/app:{tag}",
            env=[("A", "1")],
            workdir="/app",
            labels={"k": "v"},
            transport=transport,
        )
        return asyncio.run(work)

    digest = run("new")
    assert reg.requests.count("PUT /v2/app/blobs/uploads/u1") == 2  # the layer and the config
    assert digest == "sha256:" + hashlib.sha256(reg.manifests["new"][0]).hexdigest()
    manifest = json.loads(reg.manifests["new"][0])
    assert [layer["digest"] for layer in manifest["layers"]] == [blob.digest]
    config = json.loads(reg.blobs[manifest["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [blob.diff_id]
    assert config["config"] == {"Env": ["PATH=/bin", "A=1"], "WorkingDir": "/app", "Labels": {"k": "v"}}
    reg.requests.clear()
    assert run("again") == digest  # the same inputs: the same image, and nothing uploaded again
    # The layer is not sent again (its upload, started while it was looked for, is cancelled);
    # only the config, a few hundred bytes sent without asking first, is.
    assert reg.sent[-1:] == [manifest["config"]["digest"].split(":")[1]] and len(reg.sent) == 3
    assert reg.requests.count("DELETE /v2/app/blobs/uploads/u1") == 1


def test_append_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    reg = FakeRegistry()
    transport = reg
    with pytest.raises(RegistryError, match="has no app:base; push the base image there first"):
        asyncio.run(append_async("localhost:5000/app:base", [], "localhost:5000/app:new", transport=transport))
    with pytest.raises(RegistryError, match="not in the repository of"):
        asyncio.run(append_async("localhost:5000/app:base", [], "localhost:5000/other:new", transport=transport))


def test_append_to_a_multi_platform_index_writes_one_manifest_per_platform(tmp_path: Path) -> None:
    reg = FakeRegistry()
    entries = []
    for arch in ("amd64", "arm64"):
        config = {"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/bin"]}}
        config_digest = reg.put_blob(json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 1},
            "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:" + arch[-1] * 64, "size": 3}],
        }
        digest = reg.put_manifest(arch, manifest, OCI_MANIFEST)
        entries.append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": {"os": "linux", "architecture": arch}}
        )
    unknown = {"os": "unknown", "architecture": "unknown"}
    entries.append({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1, "platform": unknown})
    reg.put_manifest("base", {"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": entries}, INDEX_TYPES[0])
    blob = copy_layer(make_folder(tmp_path), "/app")[0]
    work = append_async(
        "localhost:5000/app:base",
        [blob],
        "localhost:5000/app:new",
        env=[("A", "1")],
        transport=reg,
    )
    digest = asyncio.run(work)
    content, media = reg.manifests["new"]
    assert media == INDEX_TYPES[0] and digest == "sha256:" + hashlib.sha256(content).hexdigest()
    index = json.loads(content)
    assert [e["platform"]["architecture"] for e in index["manifests"]] == ["amd64", "arm64"]  # no attestation
    for entry, arch in zip(index["manifests"], ("amd64", "arm64"), strict=True):
        manifest = json.loads(reg.manifests[entry["digest"]][0])
        assert [layer["digest"] for layer in manifest["layers"]] == ["sha256:" + arch[-1] * 64, blob.digest]
        config = json.loads(reg.blobs[manifest["config"]["digest"]])
        assert config["architecture"] == arch and config["config"]["Env"] == ["PATH=/bin", "A=1"]
    assert reg.requests.count("PUT /v2/app/blobs/uploads/u1") == 3  # the layer once, two configs


def test_a_workdir_no_copy_made_ends_the_engine_part(tmp_path: Path) -> None:
    base = Image.from_base("busybox:latest").clone(name="x").with_commands(["true"])
    made = base.with_source_folder(tmp_path, dst="/app/code").with_workdir("/app")
    assert file_part_start(made) == 1  # /app is made by the copy (as a parent): no engine needed
    unknown = base.with_source_folder(tmp_path, dst="/app").with_workdir("/srv").with_env_vars({"A": "1"})
    assert file_part_start(unknown) == 3  # the engine would create /srv: it ends the engine part
    relative = base.with_workdir("/app").with_source_folder(tmp_path, dst="code").with_workdir("code")
    assert file_part_start(relative) == 2  # /app is not made by a copy; /app/code is
    after_run = base.with_source_folder(tmp_path, dst="/app").with_commands(["rm -rf /app"]).with_workdir("/app")
    assert file_part_start(after_run) == 4  # a RUN may have removed what a copy made
    assert not has_file_part(base.with_dockerignore(tmp_path / ".dockerignore"))


def test_the_path_is_chosen_by_push_file_layers_and_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images._build.append import choose
    from flyte_images._build.backends import get_builder
    from flyte_images.errors import ConfigError

    base = Image.from_base("busybox:latest").clone(name="x", registry="localhost:5000").with_commands(["true"])
    image = base.with_source_folder(tmp_path, dst="/app")
    assert choose(image, None, True).append
    assert choose(image, "append", True).append
    engine = choose(image, "docker", True)
    assert not engine.append and "docker" in engine.why
    assert not choose(image, None, False).append  # loaded into the local engine
    with pytest.raises(ConfigError, match="writes the image into a registry"):
        choose(image, "append", False)
    assert not choose(base, None, True).append  # nothing to append
    with pytest.raises(ConfigError, match="not an engine backend"):
        get_builder("append")
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "append")
    assert get_builder(None).name == "docker"  # the engine part's backend
