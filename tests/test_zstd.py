"""compression="zstd": the setting (argument, --compression, FLYTE_IMAGES_COMPRESSION, config key),
BuildKit's image output asked for zstd layers, the backends that cannot write them refusing, and
the append path writing zstd layers and reading gzip, zstd and plain base layers.

On the engine, the BuildKit daemon builds and pushes to a loopback registry; the images are read
back through the daemon (a later build FROM them), since this Docker engine (20.10) cannot pull
zstd layers."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import zstandard
from engine_support import BUSYBOX, registry

import flyte_images
from flyte_images import Image, TaskEnvironment, _config
from flyte_images._append.basefs import read_entries
from flyte_images._append.image import layer_media_type
from flyte_images._append.push import append_file_part
from flyte_images._append.tarball import copy_layer
from flyte_images._build import BuildOptions
from flyte_images._cli import main
from flyte_images._errors import ConfigError, RegistryError
from flyte_images._plan.plan import staged_plan
from flyte_images._registry import Reference, Registry
from flyte_images.builders._buildx import buildx_command
from flyte_images.builders.base import BuildRequest, BuildResult, Progress
from flyte_images.builders.docker import DockerBuilder
from flyte_images.testing import FakeBuilder

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.oci.image.index.v1+json"))


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv(_config.COMPRESSION_ENV, raising=False)
    monkeypatch.setenv("FLYTE_IMAGES_CONFIG", str(_write(tmp_path / "none.toml", "")))
    _config.reset()
    yield
    _config.reset()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _image(tmp_path: Path, name: str = "fi-zstd") -> Image:
    (tmp_path / "a.py").write_text("a")
    return Image.from_base(BUSYBOX).clone(name=name, registry="127.0.0.1:9").with_source_file(tmp_path / "a.py")


# ----- the setting ---------------------------------------------------------------------------------


def test_the_option_is_gzip_unless_set_and_refuses_other_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert BuildOptions.of().layer_compression() == "gzip"
    assert BuildOptions.of(compression="zstd").layer_compression() == "zstd"
    with pytest.raises(ConfigError, match=r"compression='lz4' is not one of gzip, zstd.*'zstd'"):
        BuildOptions.of(compression="lz4")
    with pytest.raises(ConfigError, match="compression='lz4'"):
        flyte_images.build(_image(tmp_path), builder=FakeBuilder(), compression="lz4", quiet=True)


def test_the_environment_and_the_config_file_set_it_and_the_argument_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_CONFIG", str(_write(tmp_path / "fi.toml", 'compression = "zstd"\n')))
    _config.reset()
    assert BuildOptions.of().layer_compression() == "zstd"
    assert BuildOptions.of(compression="gzip").layer_compression() == "gzip"
    monkeypatch.setenv("FLYTE_IMAGES_CONFIG", str(_write(tmp_path / "bad.toml", 'compression = "xz"\n')))
    _config.reset()
    with pytest.raises(ConfigError, match=r"compression in .*bad\.toml is 'xz'.*gzip or zstd"):
        BuildOptions.of().layer_compression()
    monkeypatch.setenv(_config.COMPRESSION_ENV, "zstd")
    assert BuildOptions.of().layer_compression() == "zstd"
    monkeypatch.setenv(_config.COMPRESSION_ENV, "brotli")
    with pytest.raises(ConfigError, match=r"FLYTE_IMAGES_COMPRESSION is 'brotli'"):
        BuildOptions.of().layer_compression()


def test_the_cli_flag_reaches_the_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flyte_images._build import deploy

    seen: list[BuildOptions] = []

    def build_named(_named: Any, _seed: Any, _concurrency: int, options: BuildOptions, _board: Any) -> Any:
        seen.append(options)
        return flyte_images.ImageCache(image_lookup={})

    monkeypatch.setattr(deploy, "build_named", build_named)
    target = _write(tmp_path / "images.py", f"from flyte_images import Image\napp = Image.from_base({BUSYBOX!r})\n")
    assert main(["build", str(target), "--compression", "zstd", "--progress", "quiet"]) == 0
    assert main(["build", str(target), "--progress", "quiet"]) == 0
    assert [options.compression for options in seen] == ["zstd", None]
    with pytest.raises(SystemExit) as refused:
        main(["build", str(target), "--compression", "lz4"])
    assert refused.value.code == 2
    assert "invalid choice: 'lz4'" in capsys.readouterr().err


def test_it_reaches_the_backend_and_is_not_part_of_the_identifier(tmp_path: Path) -> None:
    fake = FakeBuilder()
    env = TaskEnvironment("zstd-env", image=_image(tmp_path))
    plain = flyte_images.build(_image(tmp_path), builder=fake, push=False, quiet=True)
    zstd = flyte_images.build(_image(tmp_path), builder=fake, push=False, force=True, compression="zstd", quiet=True)
    flyte_images.build_images(env, builder=fake, push=False, force=True, compression="zstd", quiet=True)  # type: ignore[arg-type]
    assert plain.uri == zstd.uri
    assert [request.compression for request in fake.requests] == ["gzip", "zstd", "zstd"]


# ----- BuildKit's output ---------------------------------------------------------------------------


def _request(tmp_path: Path, push: bool, compression: str) -> BuildRequest:
    return BuildRequest(tmp_path, tmp_path / "Dockerfile", ("r/app:1",), (), push=push, compression=compression)


def test_a_zstd_push_asks_buildkit_for_zstd_layers_with_oci_media_types(tmp_path: Path) -> None:
    keys = "compression=zstd,force-compression=true,oci-mediatypes=true"
    docker_driver = buildx_command(_request(tmp_path, True, "zstd"), tmp_path / "m.json")
    assert docker_driver[-3:-1] == ["--output", f"type=image,push=true,{keys}"]
    assert "--push" not in docker_driver and "--load" not in docker_driver
    # The buildkit backend names its own output: the keys join it, each once.
    options = ["--builder", "b", "--output", "type=registry,oci-mediatypes=true"]
    remote = buildx_command(_request(tmp_path, True, "zstd"), tmp_path / "m.json", options=options)
    assert remote[-3:-1] == ["--output", "type=registry,oci-mediatypes=true,compression=zstd,force-compression=true"]
    assert options[-1] == "type=registry,oci-mediatypes=true"  # the caller's list is left as it was
    # gzip is BuildKit's default; a load goes into the engine's store, where a push's compression plays no part.
    for push, compression in ((True, "gzip"), (False, "zstd")):
        command = buildx_command(_request(tmp_path, push, compression), tmp_path / "m.json")
        assert "--output" not in command and ("--push" if push else "--load") in command


# ----- backends that cannot write zstd -------------------------------------------------------------


class GzipOnly:
    """A third-party backend written before `compressions`: it declares none."""

    name: ClassVar[str] = "gzip-only"
    exports_cache: ClassVar[bool] = False
    multi_platform: ClassVar[bool] = True
    loads: ClassVar[bool] = True

    def __init__(self) -> None:
        self.requests: list[BuildRequest] = []

    def local_exists(self, reference: str) -> bool | None:
        return False

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        self.requests.append(request)
        return BuildResult(request.tags[0], None)


def test_a_backend_without_zstd_refuses_it_naming_itself_and_what_to_use(tmp_path: Path) -> None:
    old = GzipOnly()
    with pytest.raises(ConfigError, match=r"the gzip-only backend cannot push zstd layers.*builder='buildkit'"):
        flyte_images.build(
            _image(tmp_path), builder=old, push=True, require_check=False, compression="zstd", quiet=True
        )
    assert old.requests == []
    flyte_images.build(_image(tmp_path), builder=old, push=True, require_check=False, quiet=True)
    assert [request.compression for request in old.requests] == ["gzip"]
    # A load is not a push: no layers are compressed for it, so it is not refused.
    flyte_images.build(_image(tmp_path), builder=old, push=False, force=True, compression="zstd", quiet=True)


def test_the_docker_backend_refuses_a_zstd_push_before_it_builds(tmp_path: Path) -> None:
    assert DockerBuilder.compressions == ("gzip",)
    with pytest.raises(ConfigError, match=r"the docker backend cannot push zstd layers.*--builder buildkit"):
        DockerBuilder().build(_request(tmp_path, True, "zstd"), lambda _event: None)
    with pytest.raises(ConfigError, match="the docker backend cannot push zstd layers"):
        flyte_images.build(
            _image(tmp_path), builder="docker", push=True, require_check=False, compression="zstd", quiet=True
        )


# ----- the append path: zstd layers written, gzip / zstd / plain base layers read ------------------


def test_a_zstd_copy_layer_is_the_same_tar_and_always_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("x = 1\n" * 500)
    gz = copy_layer(src, "/app")[0]
    zst, again = (copy_layer(src, "/app", compression="zstd")[0] for _ in range(2))
    assert zst.compression == "zstd" and gz.compression == "gzip"
    assert zst.digest == again.digest and zst.digest != gz.digest
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zst.content())).read()
    assert raw == gzip.decompress(gz.content())
    assert zst.diff_id == gz.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid = len(data), 0o644, 7
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def _seed(host: str, repository: str, layers: list[tuple[bytes, str]], manifest_type: str) -> None:
    """An image of `layers` (bytes, media type; bottom first) pushed as repository:v1."""
    ref = Reference(host, repository, "v1")
    config = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": []}})
    config_type = (
        "application/vnd.oci.image.config.v1+json"
        if manifest_type == OCI_MANIFEST
        else "application/vnd.docker.container.image.v1+json"
    )
    async with Registry() as reg:
        for data, _media in layers:
            await reg.push_blob(ref, data, "sha256:" + hashlib.sha256(data).hexdigest())
        await reg.push_blob(ref, config.encode(), "sha256:" + hashlib.sha256(config.encode()).hexdigest())
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": config_type,
                "digest": "sha256:" + hashlib.sha256(config.encode()).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {"mediaType": media, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}
                for data, media in layers
            ],
        }
        await reg.put_manifest(ref, manifest, manifest_type)


def _manifest(host: str, reference: str) -> dict[str, Any]:
    repository, tag = reference.split("/", 1)[1].rsplit(":", 1)
    answer = httpx.get(f"http://{host}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    if "manifests" in document:  # an index: its one image
        (entry,) = [m for m in document["manifests"] if (m.get("platform") or {}).get("os") != "unknown"]
        answer = httpx.get(f"http://{host}/v2/{repository}/manifests/{entry['digest']}", headers={"Accept": ACCEPT})
        answer.raise_for_status()
        document = answer.json()
    return document


def test_base_layers_are_read_in_gzip_zstd_and_plain_tar() -> None:
    layers = [
        (gzip.compress(_tar({"etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}), mtime=0), OCI_GZIP),
        (_tar({"etc/group": b"root:x:0:\n"}), OCI_TAR),
        (zstandard.ZstdCompressor().compress(_tar({"etc/hostname": b"zstd\n"})), OCI_ZSTD),
    ]
    with registry() as running:
        asyncio.run(_seed(running.host, "base/mixed", layers, OCI_MANIFEST))
        descriptors = _manifest(running.host, f"{running.host}/base/mixed:v1")["layers"]

        async def read() -> dict[str, Any]:
            async with Registry() as reg:
                ref = Reference(running.host, "base/mixed", "v1")
                return await read_entries(reg, ref, descriptors, [], ["etc/passwd", "etc/group", "etc/hostname"])

        found = asyncio.run(read())
    assert {path: entry.content for path, entry in found.items()} == {
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        "etc/group": b"root:x:0:\n",
        "etc/hostname": b"zstd\n",
    }
    assert found["etc/hostname"].uid == 7


def test_appended_layers_follow_the_base_and_a_docker_manifest_gets_gzip(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    image = Image.from_base(BUSYBOX).clone(name="fi-zstd-append").with_source_file(tmp_path / "app.py", dst="/srv/")
    base_tar = _tar({"etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    bases = {
        "oci-zstd": ([(zstandard.ZstdCompressor().compress(base_tar), OCI_ZSTD)], OCI_MANIFEST, None, OCI_ZSTD),
        "oci-gzip": ([(gzip.compress(base_tar, mtime=0), OCI_GZIP)], OCI_MANIFEST, None, OCI_GZIP),
        "oci-asked": ([(gzip.compress(base_tar, mtime=0), OCI_GZIP)], OCI_MANIFEST, "zstd", OCI_ZSTD),
        "docker": ([(gzip.compress(base_tar, mtime=0), DOCKER_GZIP)], DOCKER_MANIFEST, "zstd", DOCKER_GZIP),
    }
    with registry() as running:
        for name, (layers, manifest_type, asked, expected) in bases.items():
            asyncio.run(_seed(running.host, f"fi/{name}", layers, manifest_type))
            said: list[str] = []
            uri = asyncio.run(_append(image.clone(registry=running.host, name=f"fi/{name}"), said, asked))
            document = _manifest(running.host, uri)
            assert [layer["mediaType"] for layer in document["layers"]] == [layers[0][1], expected], name
            assert ("no zstd layer type" in " ".join(said)) is (name == "docker")
    with pytest.raises(RegistryError, match="Docker image manifest has no zstd layer type"):
        layer_media_type(DOCKER_MANIFEST, "zstd")


async def _append(image: Image, said: list[str], compression: str | None) -> str:
    """The file part of `image` appended to the engine part seeded as its repository:v1."""
    with staged_plan(image) as plan:
        async with Registry() as reg:
            await append_file_part(reg, plan, f"{image.registry}/{image.name}:v1", said.append, compression)
        return plan.uri


# ----- on the engine: the BuildKit daemon and a loopback registry ----------------------------------


def _buildkit(buildkitd: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    buildkitd.use(monkeypatch)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "buildkit")


# Every path under /app and /opt as the running image has it: type, mode, owner, size, link
# target or content digest, and the time of files and links in whole seconds (a folder's time in
# the engine's image is when the build wrote into it, which nothing can reproduce).
LISTING = r"""
find /app /opt | sort | while read -r p; do
  line=$(stat -c '%n|%F|%a|%u:%g|%s' "$p")
  if [ -L "$p" ] || [ ! -d "$p" ]; then line="$line|$(stat -c '%Y' "$p")"; fi
  if [ -L "$p" ]; then line="$line|$(readlink "$p")"
  elif [ -f "$p" ]; then line="$line|$(sha256sum "$p" | cut -d' ' -f1)"; fi
  echo "$line"
done
"""


def _through_buildkitd(buildkitd: Any, tmp_path: Path, uri: str) -> tuple[Path, str]:
    """The file system of `uri` as the daemon pulls it, exported as a tar, and LISTING run in it
    (dockerd cannot pull zstd layers)."""
    from flyte_images.builders.buildkit import ensure_builder

    builder = ensure_builder(buildkitd.settings())
    context = tmp_path / f"export-{uuid.uuid4().hex[:8]}"
    context.mkdir()
    (context / "listing.sh").write_text(LISTING)
    (context / "Dockerfile").write_text(f"FROM {uri}\n")
    (context / "Listing.Dockerfile").write_text(
        f"FROM {uri} AS image\nCOPY listing.sh /tmp/listing.sh\nRUN sh /tmp/listing.sh > /tmp/listing.txt\n"
        "FROM scratch\nCOPY --from=image /tmp/listing.txt /\n"
    )
    for dockerfile, output in (("Dockerfile", "type=tar,dest=rootfs.tar"), ("Listing.Dockerfile", "type=local,dest=.")):
        command = ["docker", "buildx", "build", "--builder", builder, "--file", str(context / dockerfile)]
        subprocess.run([*command, "--output", output, str(context)], check=True, capture_output=True, cwd=context)
    return context / "rootfs.tar", (context / "listing.txt").read_text()


def _files(tar_path: Path) -> dict[str, tuple[Any, ...]]:
    """Every path of an exported file system: type, mode, owner, size, link target or content
    digest (times are compared by LISTING: the export rounds them to whole seconds)."""
    out: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            digest = hashlib.sha256(data).hexdigest()
            out[member.name.strip("/")] = (
                member.type,
                member.mode,
                member.uid,
                member.gid,
                member.size,
                member.linkname,
                digest,
            )
    return out


@pytest.fixture
def buildkitd(engine: None) -> Any:
    from backend_support import require_buildkit

    return require_buildkit()


@pytest.mark.engine
def test_a_zstd_build_on_buildkitd_pushes_zstd_layers_that_run(
    buildkitd: Any, local_registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _buildkit(buildkitd, monkeypatch)
    marker = uuid.uuid4().hex
    image = Image.from_base(BUSYBOX).clone(name="fi-zstd-run", registry=local_registry)
    image = image.with_commands([f"echo {marker} > /marker"])
    built = flyte_images.build(image, builder="buildkit", compression="zstd", quiet=True)
    assert built.built and built.uri == flyte_images.build(image, builder="buildkit", dry_run=True, quiet=True).uri
    document = _manifest(local_registry, built.uri)
    assert document["mediaType"] == OCI_MANIFEST
    assert {layer["mediaType"] for layer in document["layers"]} == {OCI_ZSTD}  # the base's layers too

    # It runs: a later build FROM it, pulled by the daemon, reads what the zstd layer holds.
    later = Image.from_base(built.uri).clone(name="fi-zstd-later", registry=local_registry)
    ran = flyte_images.build(later.with_commands([f"grep -qx {marker} /marker"]), builder="buildkit", quiet=True)
    assert ran.built


@pytest.mark.engine
def test_append_on_a_zstd_engine_part_equals_the_engine_build(
    buildkitd: Any, local_registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _buildkit(buildkitd, monkeypatch)
    src = tmp_path / "proj"
    (src / "pkg" / "deep").mkdir(parents=True)
    (src / "main.sh").write_text("#!/bin/sh\necho main\n")
    (src / "main.sh").chmod(0o755)
    (src / "pkg" / "msg.txt").write_text(uuid.uuid4().hex)
    (src / "pkg" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 40)
    (src / "pkg" / "deep").chmod(0o750)
    (src / "pkg" / "link").symlink_to("msg.txt")

    def image(name: str) -> Image:
        return (
            Image.from_base(BUSYBOX)
            .clone(name=name, registry=local_registry)
            .with_commands(["mkdir -p /opt/tool && echo tool > /opt/tool/v"])
            .with_source_folder(src, dst="/app")
            .with_env_vars({"GREETING": "hi"})
            .with_workdir("/app")
        )

    by_engine = flyte_images.build(image("fi-zstd-engine"), builder="buildkit", compression="zstd", quiet=True)
    appended = flyte_images.build(image("fi-zstd-append"), compression="zstd", quiet=True)
    assert by_engine.path == "engine" and appended.path == "append"
    assert appended.uri.rsplit(":", 1)[1] == by_engine.uri.rsplit(":", 1)[1]
    for uri in (by_engine.uri, appended.uri):
        assert {layer["mediaType"] for layer in _manifest(local_registry, uri)["layers"]} == {OCI_ZSTD}, uri

    engine_tar, engine_listing = _through_buildkitd(buildkitd, tmp_path, by_engine.uri)
    appended_tar, appended_listing = _through_buildkitd(buildkitd, tmp_path, appended.uri)
    engine_files = _files(engine_tar)
    assert "app/proj/pkg/deep/data.bin" in engine_files and "opt/tool/v" in engine_files
    assert _files(appended_tar) == engine_files
    assert "/app/proj/pkg/link|symbolic link" in engine_listing and "|750|" in engine_listing
    assert appended_listing == engine_listing


@pytest.mark.engine
def test_the_compression_asked_of_an_append_is_that_of_the_appended_layers(
    buildkitd: Any, local_registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _buildkit(buildkitd, monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one")
    marker = uuid.uuid4().hex  # one engine part for both builds

    def image() -> Image:
        return (
            Image.from_base(BUSYBOX)
            .clone(name="fi-zstd-asked", registry=local_registry)
            .with_commands([f"echo {marker} > /marker"])
            .with_source_folder(src, dst="/app")
        )

    first = flyte_images.build(image(), compression="zstd", quiet=True)  # engine part and file part: zstd
    (src / "a.txt").write_text("two")
    second = flyte_images.build(image(), compression="gzip", quiet=True)  # appended to the zstd engine part
    assert first.path == second.path == "append" and second.uri != first.uri
    first_layers = _manifest(local_registry, first.uri)["layers"]
    second_layers = _manifest(local_registry, second.uri)["layers"]
    assert first_layers[:-1] == second_layers[:-1]  # the same engine part
    assert first_layers[-1]["mediaType"] == OCI_ZSTD
    assert second_layers[-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"  # as asked
