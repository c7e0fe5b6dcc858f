"""The walk that decides which files a layer copies: order, kinds, modes, ignore rules, caches."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest
from conftest import write_tree

from flyte_images import SourceError, SourceNotFoundError
from flyte_images._files import statcache as files_module
from flyte_images._files.entries import DIR, FILE, LINK, encode_entries
from flyte_images._files.ignore import DEFAULT_EXCLUDES, IgnoreRules
from flyte_images._files.statcache import StatCache
from flyte_images._files.tree import collect_tree
from flyte_images._formats.encoding import encode


def paths(root: Path, patterns: list[str] = (), **kw: object) -> list[str]:  # type: ignore[assignment]
    tree = collect_tree(root, IgnoreRules.from_lines([*DEFAULT_EXCLUDES, *patterns]), **kw)  # type: ignore[arg-type]
    return [e.path for e in tree.entries]


def test_entries_are_sorted_at_every_level_with_folders_before_their_contents(tmp_path: Path) -> None:
    write_tree(tmp_path, {"b.txt": (b"", 0o644), "a/z.txt": (b"", 0o644), "a.b/y": (b"", 0o644)})
    (tmp_path / "empty").mkdir()
    assert paths(tmp_path) == ["a", "a/z.txt", "a.b", "a.b/y", "b.txt", "empty"]


def test_kinds_modes_links_and_digests(tmp_path: Path) -> None:
    write_tree(tmp_path, {"run.sh": (b"#!/bin/sh\n", 0o755), "data": (b"x", 0o600)})
    (tmp_path / "link").symlink_to("run.sh")
    entries = {e.path: e for e in collect_tree(tmp_path, IgnoreRules.from_lines(DEFAULT_EXCLUDES)).entries}
    assert entries["run.sh"].kind == FILE and entries["run.sh"].mode == 0o755
    assert entries["data"].mode == 0o600
    assert entries["link"].kind == LINK and entries["link"].digest == "run.sh"
    assert entries["data"].digest == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_default_excludes_and_negation(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "app.py": (b"", 0o644),
            ".git/HEAD": (b"", 0o644),
            ".venv/bin/python": (b"", 0o755),
            "pkg/__pycache__/m.pyc": (b"", 0o644),
            "pkg/m.py": (b"", 0o644),
            "logs/a.log": (b"", 0o644),
            "logs/keep.log": (b"", 0o644),
        },
    )
    assert paths(tmp_path, ["logs", "!logs/keep.log"]) == [
        "app.py",
        "logs",
        "logs/keep.log",
        "pkg",
        "pkg/m.py",
    ]
    assert ".git" in paths(tmp_path, ["!.git"])


def test_excluded_folder_without_kept_children_is_dropped(tmp_path: Path) -> None:
    write_tree(tmp_path, {"build/x": (b"", 0o644), "src/y": (b"", 0o644)})
    assert paths(tmp_path, ["build", "!src/y"]) == ["src", "src/y"]


def test_prefix_matches_patterns_written_for_a_parent_folder(tmp_path: Path) -> None:
    write_tree(tmp_path, {"data/raw.bin": (b"", 0o644), "code.py": (b"", 0o644)})
    rules = IgnoreRules.from_lines([*DEFAULT_EXCLUDES, "src/data"])
    tree = collect_tree(tmp_path, rules, match_prefix="src/")
    assert [e.path for e in tree.entries] == ["code.py"]


def test_fast_entry_encoding_is_the_canonical_encoding(tmp_path: Path) -> None:
    write_tree(tmp_path, {"é/ü.txt": (b"1", 0o640), "x": (b"22", 0o755)})
    (tmp_path / "l").symlink_to("x")
    entries = collect_tree(tmp_path, IgnoreRules.from_lines(DEFAULT_EXCLUDES)).entries
    assert encode_entries(entries) == encode(tuple(e.identity() for e in entries))


def test_missing_or_wrong_kind_of_root(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        collect_tree(tmp_path / "nope", IgnoreRules.from_lines(DEFAULT_EXCLUDES))
    (tmp_path / "f").write_text("x")
    with pytest.raises(SourceError, match="not a folder"):
        collect_tree(tmp_path / "f", IgnoreRules.from_lines(DEFAULT_EXCLUDES))


def test_tree_memo_is_reused_only_while_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "_RACY_NS", 0)  # ctime cannot be set back: trust fresh files here
    write_tree(tmp_path, {"a/b.txt": (b"one", 0o644)})
    cache = StatCache(None)
    rules = IgnoreRules.from_lines(DEFAULT_EXCLUDES)
    first = collect_tree(tmp_path, rules, cache)
    assert collect_tree(tmp_path, rules, cache) is first  # remembered: only stats were made
    (tmp_path / "a" / "b.txt").write_bytes(b"three")
    changed = collect_tree(tmp_path, rules, cache)
    assert changed is not first and changed.digest != first.digest
    (tmp_path / "a" / "new.txt").write_bytes(b"")
    assert [e.path for e in collect_tree(tmp_path, rules, cache).entries] == ["a", "a/b.txt", "a/new.txt"]


def test_recently_written_files_are_not_remembered(tmp_path: Path) -> None:
    write_tree(tmp_path, {"fresh.txt": (b"x", 0o644)})
    cache = StatCache(None)
    first = collect_tree(tmp_path, IgnoreRules.from_lines(DEFAULT_EXCLUDES), cache)
    assert cache.trees == {}
    st = (tmp_path / "fresh.txt").stat()
    assert cache.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)) is None
    assert collect_tree(tmp_path, IgnoreRules.from_lines(DEFAULT_EXCLUDES), cache) is not first


def test_stat_cache_file_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "_RACY_NS", 0)
    write_tree(tmp_path / "t", {"a": (b"content", 0o644)})
    store = tmp_path / "cache.bin"
    cache = StatCache(store)
    digest = collect_tree(tmp_path / "t", IgnoreRules.from_lines(DEFAULT_EXCLUDES), cache).entries[0].digest
    assert store.exists()
    st = (tmp_path / "t" / "a").stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    assert StatCache(store).get(key) == digest
    store.write_bytes(b"garbage")
    assert StatCache(store).get(key) is None  # a corrupt cache is ignored, never trusted


def test_dirs_kind(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o750)
    (tmp_path / "d").chmod(0o750)
    (entry,) = collect_tree(tmp_path, IgnoreRules.from_lines(DEFAULT_EXCLUDES)).entries
    assert (entry.kind, entry.mode) == (DIR, 0o750)


def test_large_files_hashed_on_other_cores_get_their_own_digests(tmp_path: Path) -> None:
    import hashlib

    from flyte_images._files import tree as _files

    blobs = {f"big{i}.bin": os.urandom(_files._PARALLEL_MIN + i) for i in range(3)}
    files = {name: (data, 0o644) for name, data in blobs.items()}
    files["small.txt"] = (b"small", 0o644)
    write_tree(tmp_path, files)
    entries = {e.path: e for e in collect_tree(tmp_path, IgnoreRules.from_lines(DEFAULT_EXCLUDES)).entries}
    for name, data in blobs.items():
        assert entries[name].digest == hashlib.sha256(data).hexdigest() and entries[name].size == len(data)
    assert entries["small.txt"].digest == hashlib.sha256(b"small").hexdigest()
    assert list(entries) == sorted(entries)


# ----- the tree memo kept between processes ------------------------------------------------------


def _no_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a folder that is walked fails the test: the memo file must answer."""
    from flyte_images._files import tree as _files

    def walked(*_args: object) -> None:
        raise AssertionError("the folder was walked")

    monkeypatch.setattr(_files._Walk, "run", walked)


def test_a_new_process_reuses_the_tree_memo_file_only_while_nothing_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "_RACY_NS", 0)  # ctime cannot be set back: trust fresh files here
    root = tmp_path / "src"
    write_tree(root, {"a/b.txt": (b"one", 0o644), "c.txt": (b"two", 0o600)})
    (root / "link").symlink_to("c.txt")
    memo_dir = tmp_path / "memo"
    rules = IgnoreRules.from_lines(DEFAULT_EXCLUDES)
    first = collect_tree(root, rules, StatCache(None, memo_dir))
    assert len(list(memo_dir.glob("*.bin"))) == 1
    with monkeypatch.context() as patch:
        _no_walk(patch)
        stored = collect_tree(root, rules, StatCache(None, memo_dir))  # a new process: an empty cache
        assert stored.identity() == first.identity() and "entries" not in vars(stored)
        assert pickle.loads(pickle.dumps(stored)) == copy.deepcopy(stored) == first
        assert stored.entries == first.entries and stored == first and hash(stored) == hash(first)
        other_rules = IgnoreRules.from_lines([*DEFAULT_EXCLUDES, "c.txt"])  # other rules: another memo
        with pytest.raises(AssertionError, match="walked"):
            collect_tree(root, other_rules, StatCache(None, memo_dir))

    def same_as_without_a_cache() -> None:
        fresh = collect_tree(root, rules, StatCache(None, memo_dir))
        assert fresh == collect_tree(root, rules) and fresh.digest == collect_tree(root, rules).digest

    (root / "c.txt").write_bytes(b"three")  # content (size and times)
    same_as_without_a_cache()
    (root / "a" / "b.txt").chmod(0o600)  # mode (ctime)
    same_as_without_a_cache()
    (root / "a" / "new.txt").write_bytes(b"")  # a file added below
    same_as_without_a_cache()
    (root / "a" / "new.txt").unlink()  # and removed
    same_as_without_a_cache()
    (root / "link").unlink()  # a link's target
    (root / "link").symlink_to("a")
    same_as_without_a_cache()


def test_the_shared_cache_keeps_tree_memos_beside_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images._files.statcache import cache_dir, reset_shared_stat_cache, shared_stat_cache

    monkeypatch.setattr(files_module, "_RACY_NS", 0)
    write_tree(tmp_path / "src", {"a.py": (b"x", 0o644)})
    first = collect_tree(tmp_path / "src", IgnoreRules.from_lines(DEFAULT_EXCLUDES), shared_stat_cache(True))
    assert len(list((cache_dir() / "tree-memo-v1").glob("*.bin"))) == 1
    reset_shared_stat_cache()
    _no_walk(monkeypatch)
    assert collect_tree(tmp_path / "src", IgnoreRules.from_lines(DEFAULT_EXCLUDES), shared_stat_cache(True)) == first


def test_recently_written_trees_get_no_memo_file(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"fresh.txt": (b"x", 0o644)})
    collect_tree(tmp_path / "src", IgnoreRules.from_lines(DEFAULT_EXCLUDES), StatCache(None, tmp_path / "memo"))
    assert not (tmp_path / "memo").exists()


def test_a_damaged_tree_memo_file_is_ignored_whatever_byte_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "_RACY_NS", 0)
    root = tmp_path / "src"
    write_tree(root, {"a.txt": (b"one", 0o644), "d/b.txt": (b"two", 0o644)})
    memo_dir = tmp_path / "memo"
    rules = IgnoreRules.from_lines(DEFAULT_EXCLUDES)
    expected = collect_tree(root, rules, StatCache(None, memo_dir))
    (memo,) = memo_dir.glob("*.bin")
    good = memo.read_bytes()
    for index in range(len(good)):
        damaged = bytearray(good)
        damaged[index] ^= 0x01
        memo.write_bytes(bytes(damaged))
        got = collect_tree(root, rules, StatCache(None, memo_dir))
        assert got == expected, f"byte {index} of {len(good)} flipped yet trusted"
        assert got.entries == expected.entries
    for length in range(0, len(good), 7):
        memo.write_bytes(good[:length])
        assert collect_tree(root, rules, StatCache(None, memo_dir)) == expected


def test_only_the_most_recent_tree_memo_files_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images._files import treememo as _treememo

    monkeypatch.setattr(files_module, "_RACY_NS", 0)
    monkeypatch.setattr(_treememo, "_MEMO_KEEP", 3)
    write_tree(tmp_path / "src", {"a.txt": (b"one", 0o644)})
    memo_dir = tmp_path / "memo"
    for n in range(5):
        collect_tree(tmp_path / "src", IgnoreRules.from_lines([*DEFAULT_EXCLUDES, f"x{n}"]), StatCache(None, memo_dir))
    assert len(list(memo_dir.glob("*.bin"))) == 3
    (size,) = {p.stat().st_size for p in memo_dir.glob("*.bin")}
    monkeypatch.setattr(_treememo, "_MEMO_KEEP_BYTES", 2 * size)
    collect_tree(tmp_path / "src", IgnoreRules.from_lines([*DEFAULT_EXCLUDES, "x5"]), StatCache(None, memo_dir))
    assert len(list(memo_dir.glob("*.bin"))) == 2
    monkeypatch.setattr(_treememo, "_MEMO_KEEP_BYTES", 0)  # the newest is kept all the same
    collect_tree(tmp_path / "src", IgnoreRules.from_lines([*DEFAULT_EXCLUDES, "x6"]), StatCache(None, memo_dir))
    assert len(list(memo_dir.glob("*.bin"))) == 1


def test_a_staged_walk_remembers_only_the_digests_it_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unchanged staged files are not read again, and their digests were learnt when they were
    copied: a no-op build neither reads nor rewrites the stat cache file."""
    from flyte_images._files.staging import snapshot

    monkeypatch.setattr(files_module, "_RACY_NS", 0)
    monkeypatch.setattr("flyte_images._files.staging._racy", lambda key, now: False)
    write_tree(tmp_path / "src", {"a.txt": (b"one", 0o644), "b.txt": (b"two", 0o644)})
    store = tmp_path / "stat-cache.bin"
    with snapshot("k") as snap:
        collect_tree(tmp_path / "src", IgnoreRules.from_lines(DEFAULT_EXCLUDES), StatCache(store), snap=snap, dest="x")
        snap.finish()
    assert len(files_module._decode(store.read_bytes()) or {}) == 2
    written = store.stat().st_mtime_ns
    (tmp_path / "src" / "b.txt").write_bytes(b"changed")
    with snapshot("k") as snap:
        cache = StatCache(store)
        collect_tree(tmp_path / "src", IgnoreRules.from_lines(DEFAULT_EXCLUDES), cache, snap=snap, dest="x")
        snap.finish()
    assert len(files_module._decode(store.read_bytes()) or {}) == 3  # the changed file only
    assert store.stat().st_mtime_ns != written
    written = store.stat().st_mtime_ns
    with snapshot("k") as snap:
        cache = StatCache(store)
        collect_tree(tmp_path / "src", IgnoreRules.from_lines(DEFAULT_EXCLUDES), cache, snap=snap, dest="x")
        snap.finish()
    assert cache._digests is None  # not even read
    assert store.stat().st_mtime_ns == written
