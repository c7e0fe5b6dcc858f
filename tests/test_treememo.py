"""The tree memo's check and its keeping: a large walk checked by several processes at once, and
memo files kept unpacked by a long-lived process for the processes it forks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_tree

from flyte_images import _statcache, _treememo
from flyte_images._files import collect_tree
from flyte_images._ignore import IgnoreRules
from flyte_images._statcache import StatCache


def _tree(root: Path, folders: int = 12, files: int = 30) -> None:
    names = [f"d{d:02d}/f{f:02d}.py" for d in range(folders) for f in range(files)]
    write_tree(root, {name: (name.encode(), 0o644) for name in names})


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Forked checks on, whatever the cores and however small the tree; the forks are counted."""
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)  # ctime cannot be set back: trust fresh files here
    monkeypatch.setattr(_treememo.FORKS, "allowed", True)
    monkeypatch.setattr(_treememo.FORKS, "min_share", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forks


def _all_reaped(pids: list[int]) -> bool:
    """True when every one of `pids` has ended and been waited for (no zombie, no straggler)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return True


def test_shares_take_every_folder_once_in_order() -> None:
    folders = [(f"/f{i}", b"", "", b"\0" * _treememo._KEYS.size * (i % 7)) for i in range(50)]
    for count in (1, 2, 3, 4):
        shares = _treememo._shares(folders, count)
        assert len(shares) == count and [f for share in shares for f in share] == folders
        stats = [sum(1 + len(f[3]) // _treememo._KEYS.size for f in share) for share in shares]
        assert max(stats) - min(stats) <= 8  # about as many stats each


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_change_in_any_share_of_a_forked_check_is_seen(tmp_path: Path, forked: list[int], where: str) -> None:
    root = tmp_path / "src"
    _tree(root)
    cache = StatCache(None)
    rules = IgnoreRules.for_tree()
    first = collect_tree(root, rules, cache)
    assert collect_tree(root, rules, cache) is first  # unchanged: the memo answers
    assert len(forked) == 2  # checked by this process and two others
    folder = {"first": "d00", "middle": "d06", "last": "d11"}[where]
    (root / folder / "f17.py").write_bytes(b"changed")
    changed = collect_tree(root, rules, cache)
    assert changed is not first and changed == collect_tree(root, IgnoreRules.for_tree())
    assert _all_reaped(forked)


def test_a_check_whose_fork_fails_is_made_here(
    tmp_path: Path, forked: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "src"
    _tree(root)
    cache = StatCache(None)
    rules = IgnoreRules.for_tree()
    first = collect_tree(root, rules, cache)

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert collect_tree(root, rules, cache) is first
    (root / "d11" / "f29.py").write_bytes(b"changed")
    assert collect_tree(root, rules, cache) is not first


def test_small_trees_and_library_callers_check_in_one_process(tmp_path: Path, forked: list[int]) -> None:
    root = tmp_path / "src"
    _tree(root)
    cache = StatCache(None)
    collect_tree(root, IgnoreRules.for_tree(), cache)
    _treememo.FORKS.min_share = 10_000
    collect_tree(root, IgnoreRules.for_tree(), cache)
    _treememo.FORKS.min_share, _treememo.FORKS.allowed = 1, False
    collect_tree(root, IgnoreRules.for_tree(), cache)
    assert forked == []


def test_a_kept_memo_answers_while_its_file_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)
    kept = _treememo._Kept()
    monkeypatch.setattr(_treememo, "KEPT", kept)
    told: list[str] = []
    kept.tell = told.append
    root, memo_dir = tmp_path / "src", tmp_path / "memo"
    _tree(root, folders=2, files=3)
    rules = IgnoreRules.for_tree()
    first = collect_tree(root, rules, StatCache(None, memo_dir))
    (memo,) = memo_dir.glob("*.bin")
    assert told == [str(memo)]  # written: named to the long-lived process
    kept.keep(str(memo))
    assert list(kept.files) == [str(memo)]

    def unread(_fd: int) -> bytes:
        raise AssertionError("the memo file was read again")

    with monkeypatch.context() as patch:
        patch.setattr(_treememo, "_read_all", unread)
        assert collect_tree(root, rules, StatCache(None, memo_dir)) == first  # a new process's cache
    (root / "d01" / "f02.py").write_bytes(b"changed")
    changed = collect_tree(root, rules, StatCache(None, memo_dir))  # the memo file is replaced
    assert changed != first and changed == collect_tree(root, IgnoreRules.for_tree())
    assert kept.get(str(memo), _statcache._key(memo.stat())) is None  # kept no longer trusted
    told.clear()
    assert collect_tree(root, rules, StatCache(None, memo_dir)) == changed
    assert told == [str(memo)]  # read from the file: named again, to be kept anew


def test_kept_memos_are_bounded_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)
    kept = _treememo._Kept()
    kept.max_files = 2
    root, memo_dir = tmp_path / "src", tmp_path / "memo"
    _tree(root, folders=1, files=2)
    names = []
    for n in range(4):
        collect_tree(root, IgnoreRules.for_tree([f"x{n}"]), StatCache(None, memo_dir))
        (newest,) = set(map(str, memo_dir.glob("*.bin"))) - set(names)
        names.append(newest)
        kept.keep(newest)
    assert list(kept.files) == names[-2:]
    kept.max_files, kept.max_bytes = 10, Path(names[0]).stat().st_size + 1
    kept.keep(names[0])
    assert list(kept.files) == names[:1]  # only the newest fits
    kept.max_bytes = 1
    kept.keep(names[1])
    assert list(kept.files) == names[:1]  # a file over the limit is not read
    (memo_dir / "junk.bin").write_bytes(b"not a memo")
    kept.keep(str(memo_dir / "junk.bin"))
    kept.keep(str(memo_dir / "missing.bin"))
    kept.keep("/dev/zero")  # endless: never read
    assert str(memo_dir / "junk.bin") not in kept.files and "/dev/zero" not in kept.files


def test_the_server_keeps_the_memos_its_workers_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from flyte_images._warm import server

    monkeypatch.setattr(_statcache, "_RACY_NS", 0)
    kept = _treememo._Kept()
    monkeypatch.setattr(_treememo, "KEPT", kept)
    root, memo_dir = tmp_path / "src", tmp_path / "memo"
    _tree(root, folders=1, files=2)
    collect_tree(root, IgnoreRules.for_tree(), StatCache(None, memo_dir))
    (memo,) = memo_dir.glob("*.bin")
    notes, tell = os.pipe()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.set_blocking(notes, False)
        children = server._Server(listener, -1, (notes, tell, -1, -1))
        children.spare = 4242
        os.write(tell, f"memo {memo}\nmemo {memo}\ntook 4242\nmemo {tmp_path}/par".encode())
        assert children.read_notes()  # a spare took a command
        assert list(kept.files) == [str(memo)]
        assert children.spare is None and children.workers == {4242}
        os.write(tell, b"tial\n")
        assert not children.read_notes()  # the rest of the line: a file that is no memo
        assert list(kept.files) == [str(memo)]
    finally:
        listener.close()
        os.close(notes)
        os.close(tell)
