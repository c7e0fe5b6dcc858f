"""`flyte-images cache` and `cache prune`, on real files the tool's own modules write into a
temporary cache folder (conftest sets FLYTE_IMAGES_CACHE_DIR per test), and on real buildx
builders in a temporary Docker config."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flyte_images._cli import main
from flyte_images._files.staging import snapshot
from flyte_images._files.statcache import cache_dir, shared_stat_cache
from flyte_images._plan.explain import Breakdown, save_record
from flyte_images._registry import documents
from flyte_images._registry.record import remember_push

KEY_OLD, KEY_NEW = "a" * 24, "b" * 24
MONTH = 30 * 86400


@pytest.fixture(autouse=True)
def _own_buildx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the user's builders: buildx's config folder is the test's own."""
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))


def _stage(key: str, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    with snapshot(key) as snap:
        snap.put_bytes("app/data.bin", data, 0o644, digest)
        snap.write_dockerfile("FROM scratch\n")
        snap.finish()
    return cache_dir() / "staging" / key


def _age(path: Path, seconds: float) -> None:
    """Make `path` and everything below it look unused for `seconds`."""
    then = time.time() - seconds
    for root, folders, files in os.walk(path):
        for name in files + folders:
            os.utime(Path(root, name), (then, then), follow_symlinks=False)
    os.utime(path, (then, then))


def _fill() -> None:
    """One of each kind, written by the module that owns it (uv is placed where uvbin puts it:
    downloading it is not the point here)."""
    _stage(KEY_OLD, b"x" * 50_000)
    _stage(KEY_NEW, b"y" * 10_000)
    cache = shared_stat_cache(enabled=True)
    assert cache is not None
    old_ns = (time.time() - 3600) * 1e9
    cache.put((1, 2, 3, int(old_ns), int(old_ns)), "0" * 64, time.time_ns())
    cache.save()
    content = b'{"schemaVersion": 2}'
    documents.put(f"sha256:{hashlib.sha256(content).hexdigest()}", content, "application/json")
    save_record(KEY_OLD, Breakdown("127.0.0.1:5000/app:1", "1", []))
    remember_push("127.0.0.1:5000/app:1", "sha256:" + "1" * 64, ["linux/amd64"])
    uv = cache_dir() / "uv" / "0.13.9" / "x86_64" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_bytes(b"\x7fELF" + b"u" * 20_000)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_cache_lists_each_kind_with_count_and_size(capsys: pytest.CaptureFixture[str]) -> None:
    _fill()
    code, listed = _json(capsys, "cache", "--json")
    assert code == 0
    kinds = {k["kind"]: k for k in listed["kinds"]}
    expected = {"staging": 2, "uv": 1, "stat-cache": 1, "documents": 1, "records": 1, "pushes": 1, "builders": 0}
    assert {k: kinds[k]["count"] for k in expected} == expected
    assert kinds["staging"]["bytes"] >= 60_000 and kinds["uv"]["bytes"] >= 20_000
    assert listed["total"]["bytes"] == sum(k["bytes"] for k in listed["kinds"])
    assert listed["cache_dir"] == str(cache_dir())

    assert main(["cache"]) == 0
    text = capsys.readouterr().out
    assert str(cache_dir()) in text and "staging folders" in text and "total" in text


def test_only_the_tools_names_are_listed_or_removed_never_through_a_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the cache's")
    (outside / f"sha256-{'2' * 64}").write_text("looks like a document")
    root = cache_dir()
    (root / "notes.txt").write_text("mine")  # a name the tool never makes
    (root / "staging" / ("c" * 24)).symlink_to(outside)  # a staging name, but a link
    shutil.rmtree(root / "documents")
    (root / "documents").symlink_to(outside)  # a whole folder of ours replaced by a link

    _code, listed = _json(capsys, "cache", "--json")
    names = {i["name"] for i in listed["items"]}
    assert f"staging/{'c' * 24}" not in names and "notes.txt" not in names
    assert not any(n.startswith("documents/") for n in names)

    assert main(["cache", "prune"]) == 0
    capsys.readouterr()
    assert (outside / "keep.txt").exists() and (outside / f"sha256-{'2' * 64}").exists()
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "staging" / ("c" * 24)).is_symlink()
    assert not (root / "staging" / KEY_OLD).exists() and not (root / "uv" / "0.13.9").exists()
    assert not (root / "pushed.json").exists() and not (root / "stat-cache-v2.bin").exists()
    _code, after = _json(capsys, "cache", "--json")
    assert after["total"] == {"count": 0, "bytes": 0}


def test_prune_older_than_keeps_what_was_used_since(capsys: pytest.CaptureFixture[str]) -> None:
    _fill()
    staging = cache_dir() / "staging"
    _age(staging / KEY_OLD, MONTH)

    code, dry = _json(capsys, "cache", "prune", "--older-than", "7", "--dry-run", "--json")
    assert code == 0 and dry["dry_run"] is True
    assert [i["name"] for i in dry["removed"]] == [f"staging/{KEY_OLD}"]
    assert (staging / KEY_OLD).exists()  # a dry run removes nothing

    code, done = _json(capsys, "cache", "prune", "--older-than", "7", "--json")
    assert code == 0
    assert [i["name"] for i in done["removed"]] == [f"staging/{KEY_OLD}"]
    assert done["freed_bytes"] >= 50_000
    assert not (staging / KEY_OLD).exists()
    assert (staging / KEY_NEW / "context" / "app" / "data.bin").read_bytes() == b"y" * 10_000


def test_prune_keeps_a_staging_folder_a_build_holds(capsys: pytest.CaptureFixture[str]) -> None:
    folder = _stage(KEY_OLD, b"z" * 1000)
    with snapshot(KEY_OLD):  # a build of this image is running
        code = main(["cache", "prune"])
    out = capsys.readouterr().out
    assert code == 1
    assert folder.is_dir()
    assert f"kept staging/{KEY_OLD}: a build is using it" in out


@pytest.mark.parametrize("days", ["-3", "soon", "nan"])
def test_older_than_must_be_a_number_of_days(days: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cache", "prune", "--older-than", days])
    assert exit_.value.code == 2
    assert repr(days) in capsys.readouterr().err


@contextlib.contextmanager
def _docker_config(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Docker config folder of the test's own, with the user's CLI plugins (buildx)."""
    config = tmp_path / "docker"
    config.mkdir()
    plugins = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "cli-plugins"
    if plugins.is_dir():
        (config / "cli-plugins").symlink_to(plugins)
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    env.pop("BUILDX_CONFIG", None)
    yield env


@pytest.mark.engine
def test_prune_removes_the_builders_the_buildkit_backend_made(
    engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, theirs = "flyte-images-0123456789ab", "someone-elses"
    with _docker_config(tmp_path) as env:
        for name in (ours, theirs):
            subprocess.run(
                ["docker", "buildx", "create", "--name", name, "--driver", "remote", "unix:///nonexistent.sock"],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
        monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
        monkeypatch.delenv("BUILDX_CONFIG")

        _code, listed = _json(capsys, "cache", "--json")
        assert [i["name"] for i in listed["items"] if i["kind"] == "builders"] == [ours]

        assert main(["cache", "prune"]) == 0
        assert f"removed {ours}" in capsys.readouterr().out
        left = subprocess.run(["docker", "buildx", "ls"], env=env, check=True, capture_output=True, text=True).stdout
        assert ours not in left and theirs in left
