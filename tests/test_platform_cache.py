"""What this machine keeps of its pushes and of manifests' platforms (`_registry.record`): what
one process learns the next finds, a push on a machine that knows many manifests (or made many
pushes) appends a line instead of writing every other one again, and nothing damaged or of
another format is believed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from flyte_images._files.statcache import cache_dir
from flyte_images._registry import record
from flyte_images._registry.record import PlatformCache, recent_push, remember_push


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def saved(path: Path, entries: dict[str, list[str]]) -> None:
    cache = PlatformCache(path)
    for key, platforms in entries.items():
        cache.put(key, platforms)
    cache.save()


def test_a_push_appends_its_line_and_leaves_the_others_alone(tmp_path: Path) -> None:
    path = tmp_path / "manifest-platforms.json"
    saved(path, {digest(n): ["linux/amd64"] for n in range(5000)})
    before, inode = path.read_bytes(), path.stat().st_ino
    saved(path, {digest(9999): ["linux/arm64"]})
    after = path.read_bytes()
    assert path.stat().st_ino == inode and after.startswith(before)
    assert after[len(before) :].count(b"\n") == 1
    saved(path, {digest(1): ["linux/arm64", "linux/amd64"]})  # a digest's last answer is its answer
    found = PlatformCache(path)
    assert found.get(digest(9999)) == ("linux/arm64",) and found.get(digest(2)) == ("linux/amd64",)
    assert found.get(digest(1)) == ("linux/arm64", "linux/amd64") and found.get(digest(10_000)) is None


def test_a_file_of_another_format_is_not_believed_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "manifest-platforms.json"
    path.write_text(json.dumps({digest(1): ["linux/amd64"]}))  # one JSON document of every digest
    assert PlatformCache(path).get(digest(1)) is None
    saved(path, {digest(2): ["linux/amd64"]})
    assert PlatformCache(path).get(digest(2)) == ("linux/amd64",)
    assert PlatformCache(path).get(digest(1)) is None


def test_damaged_lines_are_misses_and_spoil_no_other_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest-platforms.json"
    saved(path, {digest(1): ["linux/amd64"], digest(2): ["linux/amd64"]})
    with path.open("ab") as out:  # a wrong shape, then a line cut short by a killed process
        out.write(json.dumps([digest(3), "linux/amd64"]).encode() + b"\n")
        out.write(f'["{digest(4)}",["linux/am'.encode())
    saved(path, {digest(5): ["linux/arm64"]})
    found = PlatformCache(path)
    assert [found.get(digest(n)) for n in range(1, 6)] == [
        ("linux/amd64",),
        ("linux/amd64",),
        None,
        None,
        ("linux/arm64",),
    ]


def test_a_long_file_keeps_its_newest_half(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "_PLATFORMS_COMPACT", 4096)
    path = tmp_path / "manifest-platforms.json"
    for n in range(200):
        saved(path, {digest(n): ["linux/amd64"]})
    assert os.path.getsize(path) <= 4096
    found = PlatformCache(path)
    assert found.get(digest(199)) == ("linux/amd64",) and found.get(digest(0)) is None
    assert sum(found.get(digest(n)) is not None for n in range(200)) >= 10


def test_a_push_is_trusted_for_a_while_and_recorded_by_one_appended_line() -> None:
    for n in range(2000):
        remember_push(f"registry.example/app:{n}", digest(n), ["linux/amd64"])
    path = cache_dir() / "pushed.json"
    before, inode = path.read_bytes(), path.stat().st_ino
    remember_push("registry.example/app:new", digest(-1), ["linux/arm64", "linux/amd64"])
    assert path.stat().st_ino == inode and path.read_bytes().startswith(before)
    found = recent_push("registry.example/app:new", ["linux/amd64"])
    assert found is not None and found["digest"] == digest(-1)
    assert found["platforms"] == ["linux/amd64", "linux/arm64"]
    assert recent_push("registry.example/app:new", ["linux/s390x"]) is None  # not pushed with it
    assert recent_push("registry.example/app:7", ["linux/amd64"]) == {
        "digest": digest(7),
        "platforms": ["linux/amd64"],
        "time": pytest.approx(found["time"], abs=120),
    }
    assert recent_push("registry.example/app:none", ["linux/amd64"]) is None


def test_a_push_record_of_another_format_is_not_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    path = cache_dir() / "pushed.json"
    entry = {"digest": digest(1), "platforms": ["linux/amd64"], "time": 0.0}
    path.write_text(json.dumps({"registry.example/app:1": entry}))
    monkeypatch.setattr(record.time, "time", lambda: 1.0)  # the entry would be recent
    assert recent_push("registry.example/app:1", ["linux/amd64"]) is None
    remember_push("registry.example/app:2", digest(2), ["linux/amd64"])
    assert recent_push("registry.example/app:2", ["linux/amd64"]) is not None
