"""The tree memo's check: a remembered walk is reused only while nothing it looked at changed,
in the same process (the in-memory memo) and in a new one (the memo file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tree

from flyte_images._files import statcache as _statcache
from flyte_images._files.ignore import DEFAULT_EXCLUDES, IgnoreRules
from flyte_images._files.statcache import StatCache
from flyte_images._files.tree import collect_tree


@pytest.fixture(autouse=True)
def _trust_fresh_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)  # ctime cannot be set back: trust fresh files here


def _tree(root: Path, folders: int = 12, files: int = 30) -> None:
    names = [f"d{d:02d}/f{f:02d}.py" for d in range(folders) for f in range(files)]
    write_tree(root, {name: (name.encode(), 0o644) for name in names})


@pytest.mark.parametrize("where", ["d00", "d06", "d11"])
@pytest.mark.parametrize("new_process", [False, True])
def test_a_change_in_any_folder_is_seen(tmp_path: Path, where: str, new_process: bool) -> None:
    root, memo_dir = tmp_path / "src", tmp_path / "memo"
    _tree(root)
    cache = StatCache(None, memo_dir)
    rules = IgnoreRules.from_lines(DEFAULT_EXCLUDES)
    first = collect_tree(root, rules, cache)
    assert collect_tree(root, rules, cache) is first  # unchanged: the memo answers
    assert len(list(memo_dir.glob("*.bin"))) == 1
    (root / where / "f17.py").write_bytes(b"changed")
    changed = collect_tree(root, rules, StatCache(None, memo_dir) if new_process else cache)
    assert changed != first and changed == collect_tree(root, IgnoreRules.from_lines(DEFAULT_EXCLUDES))


@pytest.mark.parametrize("change", ["removed", "added", "renamed"])
def test_files_added_removed_or_renamed_are_seen_by_a_new_process(tmp_path: Path, change: str) -> None:
    root, memo_dir = tmp_path / "src", tmp_path / "memo"
    _tree(root, folders=3, files=4)
    rules = IgnoreRules.from_lines(DEFAULT_EXCLUDES)
    first = collect_tree(root, rules, StatCache(None, memo_dir))
    assert collect_tree(root, rules, StatCache(None, memo_dir)) == first
    target = root / "d01" / "f02.py"
    if change == "removed":
        target.unlink()
    elif change == "added":
        (root / "d02" / "new.py").write_bytes(b"new")
    else:
        target.rename(root / "d01" / "g02.py")
    again = collect_tree(root, rules, StatCache(None, memo_dir))
    assert again != first and again == collect_tree(root, IgnoreRules.from_lines(DEFAULT_EXCLUDES))
