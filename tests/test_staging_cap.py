"""The staging folders' size cap: after a build stages, the least recently used folders past the
cap are removed (never the one in use, never one another build holds), the uv binary shared by
hard links is not counted, and the setting is checked (FLYTE_IMAGES_STAGING_CAP, `staging_cap`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import ConfigError, Image
from flyte_images._cli import main
from flyte_images._config import staging_cap
from flyte_images._files import staging as stage_module
from flyte_images._files.staging import snapshot, staging_root
from flyte_images._files.statcache import cache_dir
from flyte_images.testing import FakeBuilder

BASE = "flyte-images/busybox:test"
KB = 1000


def _build(tmp_path: Path, name: str, size: int) -> Path:
    """Build an image of one source folder holding `size` bytes; its staging folder."""
    src = tmp_path / name
    if not src.exists():
        write_tree(src, {"data.bin": (hashlib.sha256(name.encode()).digest() * (size // 32), 0o644)})
    before = set(staging_root().iterdir()) if staging_root().is_dir() else set()
    image = Image.from_base(BASE).clone(name=name).with_source_folder(src, dst="/app")
    flyte_images.build(image, builder=FakeBuilder(), quiet=True)
    made = set(staging_root().iterdir()) - before
    return made.pop() if made else _folder_of(name)


def _folder_of(name: str) -> Path:
    (folder,) = [p for p in staging_root().iterdir() if (p / "context" / "_fi").is_dir() and _holds(p, name)]
    return folder


def _holds(folder: Path, name: str) -> bool:
    data = next(folder.glob("context/_fi/*/*/data.bin"), None) or next(folder.rglob("data.bin"))
    return data.read_bytes()[:32] == hashlib.sha256(name.encode()).digest()


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(folder, (then, then))


def _listed(capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["cache", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _staging_row(listed: dict) -> dict:
    return next(k for k in listed["kinds"] if k["kind"] == "staging")


def test_the_least_recently_used_folders_past_the_cap_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", "400kB")  # room for two of these folders
    first = _build(tmp_path, "first", 150 * KB)
    _age(first, 300)
    second = _build(tmp_path, "second", 150 * KB)
    _age(second, 200)
    assert first.is_dir() and second.is_dir()  # two fit

    third = _build(tmp_path, "third", 150 * KB)
    assert not first.exists()  # the oldest went
    assert second.is_dir() and third.is_dir()
    listed = _listed(capsys)
    assert _staging_row(listed)["count"] == 2 and _staging_row(listed)["bytes"] <= 400 * KB
    assert {i["name"] for i in listed["items"] if i["kind"] == "staging"} == {
        f"staging/{second.name}",
        f"staging/{third.name}",
    }

    _age(third, 100)
    again = _build(tmp_path, "second", 150 * KB)  # used again: now the newest
    assert again == second
    fourth = _build(tmp_path, "fourth", 150 * KB)
    assert not third.exists() and second.is_dir() and fourth.is_dir()
    assert _staging_row(_listed(capsys))["bytes"] <= 400 * KB


def test_the_folder_in_use_is_kept_even_alone_past_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", "100kB")
    small = _build(tmp_path, "small", 10 * KB)
    big = _build(tmp_path, "big", 300 * KB)  # alone past the cap: it is the one this build sends
    assert big.is_dir() and (big / "Dockerfile").is_file() and not small.exists()


def test_a_folder_another_build_holds_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", "400kB")
    held = _build(tmp_path, "held", 150 * KB)
    _age(held, 300)
    other = _build(tmp_path, "other", 150 * KB)
    _age(other, 200)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); sys.stdin.read()", str(held / "lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        newest = _build(tmp_path, "newest", 150 * KB)
    finally:
        holder.communicate("")
    assert held.is_dir() and (held / "record").is_file()  # oldest, but a build holds it
    assert not other.exists()  # so the next oldest went
    assert newest.is_dir()


def test_the_shared_uv_binary_is_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", "320kB")
    uv = cache_dir() / "uv" / "0.13.9" / "x86_64" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_bytes(b"\x7fELF" + b"u" * 1_000_000)  # bigger than the cap, in every folder
    keys = ["a" * 24, "b" * 24, "c" * 24]
    for key in keys:
        with snapshot(key) as snap:
            snap.share_file(uv, "uv")
            data = key[0].encode() * 60 * KB
            snap.put_bytes("data.bin", data, 0o644, hashlib.sha256(data).hexdigest())
            snap.write_dockerfile("FROM scratch\n")
            snap.finish()
    assert all((staging_root() / key / "context" / "uv").stat().st_ino == uv.stat().st_ino for key in keys)
    listed = _listed(capsys)
    rows = {k["kind"]: k for k in listed["kinds"]}
    assert rows["staging"]["count"] == 3 and rows["staging"]["bytes"] < 320 * KB
    assert rows["uv"]["bytes"] >= 1_000_000  # counted once, as the cache's uv binary

    for age, key in zip((300, 200, 100), keys, strict=True):
        _age(staging_root() / key, age)
    _build(tmp_path, "files", 100 * KB)  # the folders' own files now pass the cap: the oldest goes
    assert [(staging_root() / key).exists() for key in keys] == [False, True, True]


def _as_old_record(folder: Path) -> None:
    """Write the folder's record as the format without a size does (the entries unchanged)."""
    raw = (folder / "record").read_bytes()
    assert raw.startswith(stage_module._RECORD_FORMAT)
    (folder / "record").write_bytes(stage_module._OLD_FORMAT + raw[stage_module._SIZE_END :])


def test_folders_staged_before_sizes_were_recorded_count_and_are_not_copied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", "1MB")
    monkeypatch.setattr(stage_module, "_racy", lambda key, now: False)  # a file just written is recorded
    kept = _build(tmp_path, "kept", 100 * KB)
    _as_old_record(kept)
    copies: list[str] = []
    real_copy = stage_module.Snapshot._copy

    def counting(self: stage_module.Snapshot, dfd: int | None, name: str, target: Path, what: str):  # type: ignore[no-untyped-def]
        copies.append(name)
        return real_copy(self, dfd, name, target, what)

    monkeypatch.setattr(stage_module.Snapshot, "_copy", counting)
    assert _build(tmp_path, "kept", 100 * KB) == kept and copies == []  # its old record still served

    old = _build(tmp_path, "old", 700 * KB)
    _as_old_record(old)
    _age(old, 300)
    _age(kept, 200)
    _build(tmp_path, "new", 400 * KB)  # 700 + 100 + 400 kB: the old folder, measured, goes first
    assert not old.exists() and kept.is_dir()


@pytest.mark.parametrize("value", ["off", "0"])
def test_no_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flyte-images.toml").write_text('staging_cap = "500kB"\n')
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", value)  # the environment wins over the file
    folders = [_build(tmp_path, name, 300 * KB) for name in ("one", "two", "three")]
    assert all(f.is_dir() for f in folders)
    monkeypatch.delenv("FLYTE_IMAGES_STAGING_CAP")
    _age(folders[0], 100)
    _build(tmp_path, "four", 100 * KB)  # now the file's cap holds
    assert [f.exists() for f in folders] == [False, False, True]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2GiB", 2 << 30), ("500MB", 500_000_000), ("1048576", 1 << 20), ("1.5 KiB", 1536), ("off", None), ("0", None)],
)
def test_sizes_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", value)
    assert staging_cap() == expected


def test_the_default_is_five_gib_and_the_config_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYTE_IMAGES_STAGING_CAP", raising=False)
    monkeypatch.chdir(tmp_path)
    assert staging_cap() == 5 << 30
    (tmp_path / "flyte-images.toml").write_text("staging_cap = 2097152\n")
    flyte_images._config.reset()
    assert staging_cap() == 2 << 20
    (tmp_path / "flyte-images.toml").write_text('staging_cap = "off"\n')
    flyte_images._config.reset()
    assert staging_cap() is None
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", "1MiB")  # the environment wins
    assert staging_cap() == 1 << 20


@pytest.mark.parametrize("value", ["5 gigs", "2G", "-1", "lots"])
def test_a_bad_setting_stops_the_build_before_anything_is_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_STAGING_CAP", value)
    with pytest.raises(ConfigError) as caught:
        _build(tmp_path, "any", 1 * KB)
    message = str(caught.value)
    assert "FLYTE_IMAGES_STAGING_CAP" in message and repr(value) in message and "2GiB" in message and "off" in message
    assert not staging_root().exists() or not list(staging_root().iterdir())


@pytest.mark.parametrize("line", ['staging_cap = "huge"', "staging_cap = true", "staging_cap = 1.5"])
def test_a_bad_config_file_value_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str) -> None:
    monkeypatch.delenv("FLYTE_IMAGES_STAGING_CAP", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flyte-images.toml").write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        staging_cap()
    assert "staging_cap" in str(caught.value) and str(tmp_path / "flyte-images.toml") in str(caught.value)
