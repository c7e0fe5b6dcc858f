"""A base image's file system read from its layers in a real registry (Debian's docker-registry
on loopback, no engine): whiteouts, opaque folders, symlinks and hard links, the early stop
that leaves lower layers undownloaded, the on-disk cache, and BuildKit's `--chown` rules.

Requests are counted by a forwarding front (registry_support.FakeServer + forward) in front of
the real registry; the fakes that corrupt or redirect blobs stand for what no real registry
does on demand."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.server
import io
import json
import os
import tarfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_support import registry
from registry_support import FakeServer, forward, reply

from flyte_images._append.basefs import Entry, read_entries, user_ids
from flyte_images._errors import BuildError, RegistryError
from flyte_images._registry import Reference, Registry

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
T = 1_700_000_000

PASSWD_OLD = b"root:x:0:0:root:/root:/bin/bash\n"
PASSWD_NEW = PASSWD_OLD + b"flyte:x:1001:1002::/home/flyte:/bin/sh\n"
GROUP = b"root:x:0:\n# comment\nflyte:x:1002:\nstaff:x:50:flyte\n"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Member:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""


def d(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)


@dataclass(frozen=True)
class Layer:
    data: bytes
    media: str = OCI_GZIP

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media, "digest": digest_of(self.data), "size": len(self.data)}


def layer(*members: Member, media: str = OCI_GZIP) -> Layer:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.uid, info.gid, info.mtime = m.kind, m.mode, m.uid, m.gid, T
            info.linkname = m.link
            info.size = len(m.data) if m.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(m.data) if m.kind == tarfile.REGTYPE else None)
    data = raw.getvalue()
    return Layer(gzip.compress(data, mtime=0) if media.endswith("gzip") else data, media)


async def _push(host: str, repository: str, layers: list[Layer]) -> list[dict[str, Any]]:
    """Push `layers` with a config and a manifest; return the layer descriptors as the
    registry's manifest lists them."""
    ref = Reference(host, repository, "v1")
    config = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": []}})
    async with Registry() as reg:
        for item in layers:
            await reg.push_blob(ref, item.data, digest_of(item.data))
        await reg.push_blob(ref, config.encode(), digest_of(config.encode()))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config.encode()),
                       "size": len(config)},
            "layers": [item.descriptor for item in layers],
        }  # fmt: skip
        await reg.put_manifest(ref, manifest, OCI_MANIFEST)
        fetched = await reg.manifest(ref)
    return list(json.loads(fetched.content)["layers"])


def push(host: str, repository: str, layers: list[Layer]) -> list[dict[str, Any]]:
    return asyncio.run(_push(host, repository, layers))


def read(
    host: str, repository: str, descriptors: list[dict[str, Any]], paths: list[str], contents: Sequence[str] = ()
) -> dict[str, Entry | None]:
    async def go() -> dict[str, Entry | None]:
        async with Registry() as reg:
            return await read_entries(reg, Reference(host, repository, "v1"), descriptors, paths, contents)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with registry() as running:
        yield running.host


@pytest.fixture
def front(upstream: str) -> Iterator[FakeServer]:
    """A forwarding front that records every request the reader makes."""
    with FakeServer(lambda handler: forward(handler, upstream)) as fake:
        yield fake


def blob_gets(fake: FakeServer) -> list[str]:
    return [s.path.rsplit("/", 1)[1] for s in fake.seen if s.method == "GET" and "/blobs/" in s.path]


def test_the_top_layer_decides_and_the_big_lower_layer_is_never_fetched(upstream: str, front: FakeServer) -> None:
    big = layer(d("etc"), Member("etc/passwd", data=PASSWD_OLD), Member("usr/big.bin", data=os.urandom(2 << 20)))
    top = layer(d("etc"), Member("etc/passwd", data=PASSWD_NEW, mode=0o600), Member("etc/group", data=GROUP))
    layers = push(upstream, "early/stop", [big, top])
    found = read(front.host, "early/stop", layers, ["/etc/"], ["./etc/passwd", "etc/group"])
    passwd = found["./etc/passwd"]
    assert passwd == Entry("etc/passwd", "file", 0o600, 0, 0, T, "", PASSWD_NEW)
    assert found["etc/group"] is not None and found["etc/group"].content == GROUP
    assert found["/etc/"] == Entry("etc", "dir", 0o755, 0, 0, T)
    assert blob_gets(front) == [top.descriptor["digest"]]  # the 2 MiB layer below was never asked for

    # Something no layer has is only known to be absent once every layer was read, each once.
    front.seen.clear()
    assert read(front.host, "early/stop", layers, ["opt/nothing"]) == {"opt/nothing": None}
    assert sorted(blob_gets(front)) == sorted([big.descriptor["digest"], top.descriptor["digest"]])


def test_whiteouts_opaque_folders_links_and_files_over_folders(upstream: str) -> None:
    bottom = layer(
        d("etc"), Member("etc/passwd", data=PASSWD_OLD), Member("etc/hosts", data=b"h"),
        d("opt"), d("opt/app"), Member("opt/app/old.py"), Member("opt/app/keep.py", mode=0o640),
        d("var"), d("var/lib"), Member("var/lib/x"), d("srv"), Member("srv/a"),
        d("home", uid=5), Member("home/f", data=b"shared", mode=0o600),
    )  # fmt: skip
    middle = layer(
        d("etc"), Member("etc/.wh.hosts"),  # deletes the lower etc/hosts
        d("var"), Member("var/.wh.lib"),  # deletes var/lib and all below it
        d("opt"), d("opt/app", mode=0o700, uid=1001), Member("opt/app/.wh..wh..opq"), Member("opt/app/keep.py"),
        Member("srv", data=b"now a file"),  # a file over a lower folder: srv/a is gone
        Member("etc/resolv.conf", tarfile.SYMTYPE, link="../run/resolv.conf"),
        Member("home/hard", tarfile.LNKTYPE, link="home/f", mode=0o600),  # a hard link to a lower layer's file
    )  # fmt: skip
    top = layer(d("var"), d("var/lib"), Member("var/lib/new"), Member("etc/.wh.passwd"), Member("etc/passwd"))
    layers = push(upstream, "rules/all", [bottom, middle, top])
    asked = ["etc/hosts", "var/lib/x", "var/lib/new", "var/lib", "opt/app", "opt/app/old.py", "opt/app/keep.py"]
    asked += ["srv/a", "srv", "etc/resolv.conf", "home"]
    found = read(upstream, "rules/all", layers, asked, ["home/hard", "etc/passwd"])
    assert found["etc/hosts"] is None
    assert found["var/lib/x"] is None  # below a whiteout folder
    assert found["var/lib/new"] is not None and found["var/lib"] == Entry("var/lib", "dir", 0o755, 0, 0, T)
    assert found["opt/app"] == Entry("opt/app", "dir", 0o700, 1001, 0, T)  # the upper folder's metadata
    assert found["opt/app/old.py"] is None  # hidden by the opaque marker
    assert found["opt/app/keep.py"] == Entry("opt/app/keep.py", "file", 0o644, 0, 0, T)  # the upper copy
    assert found["srv/a"] is None and found["srv"] is not None and found["srv"].kind == "file"
    assert found["etc/resolv.conf"] == Entry("etc/resolv.conf", "symlink", 0o644, 0, 0, T, "../run/resolv.conf")
    assert found["home"] == Entry("home", "dir", 0o755, 5, 0, T)
    assert found["home/hard"] == Entry("home/hard", "file", 0o600, 0, 0, T, "", b"shared")
    # A whiteout and a new file of the same name in one layer: the new file (whiteouts hide only lower layers).
    assert found["etc/passwd"] == Entry("etc/passwd", "file", 0o644, 0, 0, T, "", b"")


def test_uncompressed_and_docker_media_types(upstream: str, front: FakeServer) -> None:
    plain = layer(d("etc"), Member("etc/passwd", data=PASSWD_NEW), media=OCI_TAR)
    docker = layer(d("app"), Member("app/x", data=b"x"), media=DOCKER_GZIP)
    layers = push(upstream, "media/types", [plain, docker])
    found = read(front.host, "media/types", layers, ["app"], ["etc/passwd"])
    assert found["etc/passwd"] is not None and found["etc/passwd"].content == PASSWD_NEW
    assert found["app"] is not None and found["app"].kind == "dir"


def test_a_second_lookup_makes_no_request_and_a_corrupt_cache_is_ignored(upstream: str, front: FakeServer) -> None:
    layers = push(upstream, "cache/me", [layer(d("etc"), Member("etc/passwd", data=PASSWD_NEW))])
    first = read(front.host, "cache/me", layers, ["etc", "missing"], ["etc/passwd"])
    assert front.seen
    front.seen.clear()
    assert read(front.host, "cache/me", layers, ["etc", "missing"], ["etc/passwd"]) == first
    assert front.seen == []
    # Asked without its content, the same path is another question: one more read.
    assert read(front.host, "cache/me", layers, ["etc/passwd"])["etc/passwd"] == Entry(
        "etc/passwd", "file", 0o644, 0, 0, T
    )
    assert blob_gets(front)
    cached = list((Path(os.environ["FLYTE_IMAGES_CACHE_DIR"]) / "basefs").glob("*.json"))
    assert len(cached) == 4
    for file in cached:
        file.write_text('{"path": "etc/passwd", "entry": {"kind": "nonsense"')
    front.seen.clear()
    assert read(front.host, "cache/me", layers, ["etc", "missing"], ["etc/passwd"]) == first
    assert blob_gets(front)


def test_a_blob_that_is_not_its_digest_is_refused(upstream: str) -> None:
    # Zero blocks after the tar's end: the reader is done before the blob is, and must read on to check it.
    padding = bytes(300_000)
    right = Layer(layer(d("etc"), Member("etc/passwd", data=PASSWD_NEW), media=OCI_TAR).data + padding, OCI_TAR)
    other = layer(d("etc"), Member("etc/passwd", data=PASSWD_OLD), media=OCI_TAR).data + padding
    assert len(other) == len(right.data)
    layers = push(upstream, "bad/blob", [right])
    served = [other]

    def swap(handler: http.server.BaseHTTPRequestHandler) -> None:
        # Stands for a registry or cache that serves other bytes under a digest.
        if "/blobs/" in handler.path:
            reply(handler, 200, served[0], {"Content-Type": "application/octet-stream"})
        else:
            forward(handler, upstream)

    with FakeServer(swap) as fake:
        with pytest.raises(RegistryError, match="does not match its digest"):
            read(fake.host, "bad/blob", layers, [], ["etc/passwd"])
        served[0] = right.data + b"\0" * 512  # longer than the manifest says: refused as it arrives
        with pytest.raises(RegistryError, match=r"sent more than the \d+ bytes of the blob"):
            read(fake.host, "bad/blob", layers, [], ["etc/passwd"])
    assert read(upstream, "bad/blob", layers, [], ["etc/passwd"])["etc/passwd"] is not None  # nothing cached above


def test_a_redirected_blob_is_streamed_from_where_it_lives(upstream: str) -> None:
    layers = push(upstream, "moved/blob", [layer(d("etc"), Member("etc/group", data=GROUP))])

    def cdn(handler: http.server.BaseHTTPRequestHandler) -> None:
        # Stands for a registry whose blobs live behind a 307 (Docker Hub, GHCR, ECR).
        if "/blobs/" in handler.path:
            reply(handler, 307, headers={"Location": f"http://{upstream}{handler.path}"})
        else:
            forward(handler, upstream)

    with FakeServer(cdn) as fake:
        found = read(fake.host, "moved/blob", layers, [], ["etc/group"])
    assert found["etc/group"] is not None and found["etc/group"].content == GROUP


def test_refusals_name_what_is_wrong(upstream: str) -> None:
    huge = layer(d("etc"), Member("etc/passwd", data=b"x" * (1024 * 1024 + 1)))
    layers = push(upstream, "refuse/big", [huge])
    with pytest.raises(BuildError, match=r"/etc/passwd is 1048577 bytes"):
        read(upstream, "refuse/big", layers, [], ["etc/passwd"])
    assert read(upstream, "refuse/big", layers, ["etc/passwd"])["etc/passwd"] is not None  # metadata only is fine
    with pytest.raises(BuildError, match="root folder"):
        read(upstream, "refuse/big", layers, ["/"])
    zstd = [{**layers[0], "mediaType": OCI_ZSTD}]  # paths not asked before: answers are cached by digest
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(
            BuildError,
            match=r"\(application/vnd\.oci\.image\.layer\.v1\.tar\+zstd\) is compressed with zstd.*zstandard",
        ):
            read(upstream, "refuse/big", zstd, ["etc/zstd"])
    not_tar = [{**layers[0], "mediaType": "application/vnd.in-toto+json"}]
    with pytest.raises(BuildError, match="in-toto"):
        read(upstream, "refuse/big", not_tar, ["etc/in-toto"])
    broken = [{**layers[0], "mediaType": OCI_TAR}]  # gzip bytes read as a plain tar
    with pytest.raises(RegistryError, match="not a readable layer tarball"):
        read(upstream, "refuse/big", broken, ["nothing/here"])


def test_memory_stays_flat_for_a_big_layer(upstream: str) -> None:
    payload = os.urandom(24 << 20)
    big = layer(d("data"), Member("data/blob.bin", data=payload), d("etc"), Member("etc/passwd", data=PASSWD_NEW),
                media=OCI_TAR)  # fmt: skip
    del payload
    layers = push(upstream, "big/layer", [big])
    tracemalloc.start()
    try:
        found = read(upstream, "big/layer", layers, ["data/blob.bin"], ["etc/passwd"])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found["etc/passwd"] is not None and found["etc/passwd"].content == PASSWD_NEW
    assert found["data/blob.bin"] is not None and found["data/blob.bin"].content is None
    assert peak < 4 << 20, f"reading a 24 MiB layer allocated {peak >> 20} MiB at once"


def test_user_ids_follow_buildkit() -> None:
    assert user_ids(PASSWD_NEW, GROUP, "flyte", "flyte") == (1001, 1002)
    assert user_ids(PASSWD_NEW, GROUP, "flyte", None) == (1001, 1002)  # the primary group
    assert user_ids(PASSWD_NEW, GROUP, "flyte", "staff") == (1001, 50)
    assert user_ids(PASSWD_NEW, GROUP, "flyte", "7") == (1001, 7)
    assert user_ids(None, None, "1000", None) == (1000, 1000)  # an id user: that id for both
    assert user_ids(None, None, "1000", "20") == (1000, 20)
    assert user_ids(None, None, "root", "root") == (0, 0)  # root is 0 without a lookup
    assert user_ids(None, GROUP, "42", "flyte") == (42, 1002)
    assert user_ids(b"  flyte:x:5:6::/:/bin/sh  \r\n", None, "flyte", "") == (5, 0)
    with pytest.raises(BuildError, match=r"no user 'flyte' in /etc/passwd.*useradd flyte"):
        user_ids(PASSWD_OLD, GROUP, "flyte", "flyte")
    with pytest.raises(BuildError, match=r"no group 'docker' in /etc/group"):
        user_ids(PASSWD_NEW, GROUP, "flyte", "docker")
    with pytest.raises(BuildError, match=r"no /etc/passwd to find the user 'flyte'"):
        user_ids(None, GROUP, "flyte", None)
    with pytest.raises(BuildError, match=r"no group '# comment'"):  # comments are skipped in /etc/group
        user_ids(PASSWD_NEW, b"# comment:x:9:\n", "flyte", "# comment")
    assert user_ids(b"#x:x:3:4\n", None, "#x", None) == (3, 4)  # but not in /etc/passwd (moby/sys/user)
    with pytest.raises(BuildError, match="no numeric id"):
        user_ids(b"flyte:x:abc:1\n", None, "flyte", None)
    with pytest.raises(BuildError, match="negative id"):
        user_ids(None, None, "-1", None)


def test_http_errors_while_streaming_are_registry_errors(upstream: str) -> None:
    layers = push(upstream, "cut/off", [layer(d("etc"), Member("etc/passwd", data=os.urandom(300_000)))])

    def cut(handler: http.server.BaseHTTPRequestHandler) -> None:
        # Stands for a connection that breaks in the middle of a blob.
        if "/blobs/" not in handler.path:
            forward(handler, upstream)
            return
        body = httpx.get(f"http://{upstream}{handler.path}").content
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.connection.close()

    with FakeServer(cut) as fake, pytest.raises(RegistryError, match="broke off the blob"):
        read(fake.host, "cut/off", layers, [], ["etc/passwd"])


def test_a_lookup_cancelled_in_the_middle_of_a_layer_ends_cleanly(upstream: str) -> None:
    layers = push(upstream, "slow/blob", [layer(Member("data.bin", data=os.urandom(1 << 20)), media=OCI_TAR)])

    def drip(handler: http.server.BaseHTTPRequestHandler) -> None:
        # Stands for a slow registry: the blob's start, then nothing for a while.
        if "/blobs/" not in handler.path:
            forward(handler, upstream)
            return
        body = httpx.get(f"http://{upstream}{handler.path}").content
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:65536])
        handler.wfile.flush()
        time.sleep(3)

    async def go(host: str) -> None:
        async with Registry() as reg:
            lookup = read_entries(reg, Reference(host, "slow/blob", "v1"), layers, ["nothing"])
            await asyncio.wait_for(lookup, 0.5)

    with FakeServer(drip) as fake:
        start = time.monotonic()
        # The worker thread is waiting for a chunk when the lookup is cancelled: the blob is
        # closed after that wait ends, never while it runs (which would be a RuntimeError).
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(go(fake.host))
        assert time.monotonic() - start < 2.5
