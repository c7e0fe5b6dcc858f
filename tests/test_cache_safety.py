"""The cache folder and its files: another user's folder is refused, clean-ups never go through
a symlink nor touch names the tool did not make, a cache file that is not exactly one the tool
wrote (a FIFO, a link, a huge or forged file) is ignored, and an unwritable cache folder is one
clear error. Builds run on the fake backend here; test_engine_cache_safety.py builds on the
real engine."""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import BuildError, ConfigError, Image, SourceError
from flyte_images._cli import main
from flyte_images._files import statcache as _statcache
from flyte_images._files import treememo as _treememo
from flyte_images._files.ignore import DEFAULT_EXCLUDES, IgnoreRules
from flyte_images._files.statcache import StatCache, cache_dir
from flyte_images._files.tree import collect_tree
from flyte_images._plan.plan import image_digest
from flyte_images._registry import documents, record
from flyte_images.testing import FakeBuilder

BASE = "flyte-images/busybox:test"
OLD = time.time() - 30 * 24 * 3600  # older than any clean-up's age limit
LONG_NAME = "n" * 251 + ".txt"  # 255 bytes: the longest name Linux allows


def _image(src: Path) -> Image:
    return Image.from_base(BASE).clone(name="cache-safety").with_source_folder(src, dst="/app")


def _images_file(tmp_path: Path, src: Path) -> Path:
    images = tmp_path / "images.py"
    images.write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"img = Image.from_base({BASE!r}).clone(name='cache-safety')"
        f".with_source_folder(Path({str(src)!r}), dst='/app')\n"
    )
    return images


def _victim(root: Path) -> Path:
    """A folder of someone's files, old enough for any clean-up, each name one the tool uses."""
    write_tree(root, {"0123456789abcdef01234567/lock": (b"mine", 0o644), "keep/data.txt": (b"precious", 0o644)})
    (root / ("f" * 32 + ".bin")).write_bytes(b"precious memo-like file")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (OLD, OLD))
    return root


def _snapshot_of(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


class Hung(BaseException):
    """Not an OSError: code that ignores failures to read a file must not swallow it."""


@contextlib.contextmanager
def _no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail instead of waiting for ever (a FIFO opened for reading waits for a writer)."""

    def hung(_signum: int, _frame: object) -> None:
        raise Hung(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ----- the cache folder itself ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775, 0o722])
def test_a_cache_folder_others_can_write_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(mode)
    monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(shared))
    monkeypatch.setenv("FLYTE_IMAGES_STAT_CACHE", "1")  # `id` uses the cache folder (not by default in CI)
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    assert main(["id", str(_images_file(tmp_path, src))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(shared) in err and f"chmod go-w {shared}" in err and "FLYTE_IMAGES_CACHE_DIR" in err
    with pytest.raises(ConfigError, match="can be written by other users"):
        flyte_images.build(_image(src), builder=FakeBuilder(), quiet=True)
    assert list(shared.iterdir()) == []  # nothing was written to it


def test_a_cache_folder_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    theirs = tmp_path / "their-cache"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(theirs))
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    with pytest.raises(ConfigError, match=rf"{theirs} belongs to user id 65534.*chown"):
        image_digest(_image(src), use_stat_cache=True)


def test_a_missing_cache_folder_is_made_private_and_a_private_one_is_used_through_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(tmp_path / "disk" / "cache"))
    old_umask = os.umask(0)  # even a umask that would let everyone write
    try:
        assert cache_dir() == tmp_path / "disk" / "cache"
    finally:
        os.umask(old_umask)
    real = tmp_path / "disk" / "cache"
    assert (real.stat().st_mode & 0o777) == 0o700
    (tmp_path / "link").symlink_to(real)  # a cache kept elsewhere: what the link points to is checked
    monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(tmp_path / "link"))
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    fake = FakeBuilder()
    result = flyte_images.build(_image(src), builder=fake, quiet=True)
    assert fake.store[result.uri].files == {"/app/src/a.py": b"a"}
    assert (real / "staging").is_dir()


# ----- clean-ups never go through a symlink, and remove only the tool's own names --------------


def test_dockerfile_context_never_cleans_up_through_a_staging_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = _victim(tmp_path / "victim")
    before = _snapshot_of(victim)
    (cache_dir() / "staging").symlink_to(victim)
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    code = main(["dockerfile", f"{_images_file(tmp_path, src)}:img", "--context", str(tmp_path / "ctx")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "is a symlink" in err and str(cache_dir() / "staging") in err
    assert _snapshot_of(victim) == before


def test_old_staging_folders_are_reclaimed_without_following_links_or_touching_other_names(tmp_path: Path) -> None:
    victim = _victim(tmp_path / "victim")
    victim_mode = victim.stat().st_mode
    before = _snapshot_of(victim)
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    flyte_images.build(_image(src), builder=FakeBuilder(), quiet=True)
    staging = cache_dir() / "staging"
    (ours,) = staging.iterdir()
    old_key = staging / ("a" * 24)  # an old image's folder, holding a link to someone's folder
    write_tree(old_key, {"context/_fi/0/file.txt": (b"old", 0o644), "lock": (b"", 0o644)})
    (old_key / "context" / "_fi" / "0" / "out").symlink_to(victim)
    (old_key / "context" / "_fi" / "0").chmod(0o555)  # staged read-only folders are removed too
    (staging / ("b" * 24)).symlink_to(victim)  # a link named as a key: not the tool's, never followed
    notes = staging / "notes"  # not a name a build makes
    notes.mkdir()
    for path in (old_key, staging / ("b" * 24), notes):
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    (src / "a.py").write_bytes(b"edited")
    flyte_images.build(_image(src), builder=FakeBuilder(), quiet=True)
    assert sorted(p.name for p in staging.iterdir()) == sorted([ours.name, "b" * 24, "notes"])
    assert _snapshot_of(victim) == before and victim.stat().st_mode == victim_mode


def test_memo_files_are_never_pruned_through_a_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)
    monkeypatch.setattr(_treememo, "_MEMO_KEEP", 1)  # every memo file but the newest goes
    victim = _victim(tmp_path / "victim")
    before = _snapshot_of(victim)
    (cache_dir() / "tree-memo-v1").symlink_to(victim)
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    expected = image_digest(_image(src), use_stat_cache=False)
    assert image_digest(_image(src), use_stat_cache=True) == expected
    assert _snapshot_of(victim) == before


def test_memo_pruning_removes_only_memo_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)
    monkeypatch.setattr(_treememo, "_MEMO_KEEP", 1)
    memo_dir = tmp_path / "memo"
    memo_dir.mkdir()
    foreign = {"notes.bin": b"not a memo", "readme.txt": b"mine", ("e" * 31) + ".bin": b"almost a memo"}
    for name, data in foreign.items():
        (memo_dir / name).write_bytes(data)
        os.utime(memo_dir / name, (OLD, OLD))
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    for n in range(3):
        collect_tree(src, IgnoreRules.from_lines([*DEFAULT_EXCLUDES, f"x{n}"]), StatCache(None, memo_dir))
    names = {p.name for p in memo_dir.iterdir()}
    assert set(foreign) < names and len(names - set(foreign)) == 1  # the newest memo only


def test_registry_documents_are_never_kept_or_trimmed_through_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents, "MAX_FOLDER", 10)  # every put trims
    victim = _victim(tmp_path / "victim")
    before = _snapshot_of(victim)
    (cache_dir() / "documents").symlink_to(victim)
    content = b'{"schemaVersion": 2}'
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    documents.put(digest, content, "application/json")
    assert _snapshot_of(victim) == before
    assert documents.get(digest) is None
    (cache_dir() / "documents").unlink()
    (cache_dir() / "documents").mkdir()
    (cache_dir() / "documents" / "notes.txt").write_bytes(b"x" * 100)
    documents.put(digest, content, "application/json")
    assert (cache_dir() / "documents" / "notes.txt").read_bytes() == b"x" * 100  # not ours: kept


def test_the_push_record_lock_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (cache_dir() / "pushed.lock").symlink_to(victim)
    record.remember_push("registry.example/app:1", "sha256:" + "0" * 64, ["linux/amd64"])
    assert victim.read_bytes() == b"precious"


# ----- cache files: bounded, typed reads ------------------------------------------------------


def _forge_memo(memo: Path, folders: list[tuple[str, bytes, str, bytes]]) -> None:
    """Rewrite a memo file with another folder list and a wrong tree, with a valid checksum."""
    raw = memo.read_bytes()
    start = len(_treememo._MEMO_FORMAT) + 40
    (size,) = struct.unpack(">Q", raw[start - 8 : start])
    ident, _count, _digest, _folders = marshal.loads(raw[start : start + size])
    head = marshal.dumps((ident, 0, "0" * 64, folders))
    rest = struct.pack(">Q", len(head)) + head + marshal.dumps(())
    memo.write_bytes(_treememo._MEMO_FORMAT + hashlib.sha256(rest).digest() + rest)


@pytest.mark.parametrize("listed", ["nothing", "a subfolder only"])
def test_a_memo_that_does_not_list_its_root_folder_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: str
) -> None:
    monkeypatch.setattr(_statcache, "_RACY_NS", 0)
    root, memo_dir = tmp_path / "src", tmp_path / "memo"
    write_tree(root, {"a.py": (b"a", 0o644), "sub/b.py": (b"b", 0o644)})
    rules = IgnoreRules.from_lines(DEFAULT_EXCLUDES)
    collect_tree(root, rules, StatCache(None, memo_dir))
    (memo,) = memo_dir.glob("*.bin")
    sub = os.stat(root / "sub")
    folders = [] if listed == "nothing" else [(str(root / "sub"), _treememo._KEYS.pack(*_statcache._key(sub)), "", b"")]
    _forge_memo(memo, folders)
    (root / "c.py").write_bytes(b"added")
    got = collect_tree(root, rules, StatCache(None, memo_dir))
    assert got == collect_tree(root, IgnoreRules.from_lines(DEFAULT_EXCLUDES)) and len(got.entries) == 4


def _cache_with_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, Path, Path]:
    """(an images file, its id, the memo file, the stat cache file) after one `id` that left both."""
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644), "pkg/b.py": (b"b", 0o644)})
    images = _images_file(tmp_path, src)
    with monkeypatch.context() as patch:
        patch.setattr(_statcache, "_RACY_NS", 0)
        digest = image_digest(_image(src), use_stat_cache=True)
    (memo,) = (cache_dir() / "tree-memo-v1").glob("*.bin")
    store = cache_dir() / _statcache._CACHE_FILE_NAME
    assert store.is_file()
    return images, digest[:32], memo, store


def _plant(path: Path, what: str) -> None:
    path.unlink()
    if what == "fifo":
        os.mkfifo(path)
    elif what == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    else:  # a 512 MiB file starting with the right format line (sparse: it takes no disk)
        with open(path, "wb") as out:
            out.write(_treememo._MEMO_FORMAT if path.suffix == ".bin" and "memo" in str(path) else b"")
            out.truncate(512 << 20)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))


@pytest.mark.parametrize("what", ["fifo", "link to /dev/zero", "huge"])
@pytest.mark.parametrize("which", ["memo", "stat cache"])
def test_an_odd_cache_file_is_ignored_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, which: str
) -> None:
    """`flyte-images id` in its own process, its memory bounded: it neither hangs nor reads
    what is not a cache file the tool wrote, and gives the right identifier."""
    images, identifier, memo, store = _cache_with_files(tmp_path, monkeypatch)
    if which == "stat cache":
        memo.unlink()  # so the stat cache is read
    _plant(memo if which == "memo" else store, what)
    done = subprocess.run(
        [sys.executable, "-m", "flyte_images._cli", "id", str(images)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
        env={**os.environ, "FLYTE_IMAGES_STAT_CACHE": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert identifier in done.stdout
    if which == "stat cache" and what != "huge":
        assert store.is_file() and not store.is_symlink()  # replaced by the next write


def test_a_staging_record_that_is_a_fifo_is_ignored(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    flyte_images.build(_image(src), builder=FakeBuilder(), quiet=True)
    (folder,) = (cache_dir() / "staging").iterdir()
    (folder / "record").unlink()
    os.mkfifo(folder / "record")
    (src / "a.py").write_bytes(b"edited")
    fake = FakeBuilder()
    with _no_hang():
        result = flyte_images.build(_image(src), builder=fake, quiet=True)
    assert fake.store[result.uri].files == {"/app/src/a.py": b"edited"}
    assert (folder / "record").is_file()


def test_a_fifo_staged_as_a_single_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A single file (a source file, the uv binary kept in the cache folder) is opened without
    waiting: a FIFO in its place is one error."""
    os.mkfifo(tmp_path / "pipe")
    image = Image.from_base(BASE).clone(name="cache-safety").with_source_file(tmp_path / "pipe", dst="/app")
    with _no_hang(), pytest.raises(SourceError, match=f"{tmp_path / 'pipe'} is not a regular file"):
        flyte_images.build(image, builder=FakeBuilder(), quiet=True)


# ----- names, depth and unwritable cache folders ----------------------------------------------


def test_a_255_byte_file_name_stages(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {LONG_NAME: (b"long", 0o644), "b.txt": (b"b", 0o644)})
    fake = FakeBuilder()
    result = flyte_images.build(_image(src), builder=fake, quiet=True)
    assert fake.store[result.uri].files == {f"/app/src/{LONG_NAME}": b"long", "/app/src/b.txt": b"b"}
    assert result.uri.endswith(image_digest(_image(src))[:32])
    (src / LONG_NAME).write_bytes(b"longer now")  # and again, over the staged copy
    result = flyte_images.build(_image(src), builder=fake, quiet=True)
    assert fake.store[result.uri].files[f"/app/src/{LONG_NAME}"] == b"longer now"


def test_dockerfile_context_of_a_tree_500_folders_deep(tmp_path: Path) -> None:
    rel = "/".join(["d"] * 500)
    src = tmp_path / "src"
    (src / rel).mkdir(parents=True)
    (src / rel / "leaf.txt").write_bytes(b"bottom")
    (src / "d" / "up").symlink_to("..")
    (src / "d" / "d").chmod(0o555)
    target = tmp_path / "ctx"
    assert main(["dockerfile", f"{_images_file(tmp_path, src)}:img", "--context", str(target)]) == 0
    staged = target / "_fi" / "0" / "src"
    assert (staged / rel / "leaf.txt").read_bytes() == b"bottom"
    assert os.readlink(staged / "d" / "up") == ".."
    assert (staged / "d" / "d").stat().st_mode & 0o777 == 0o555
    assert (target / "Dockerfile").is_file()


@contextlib.contextmanager
def unwritable_cache(tmp_path: Path, how: str) -> Iterator[Path]:
    """A cache folder that cannot be written: below a regular file, on a read-only bind mount, or
    made immutable (the last two need root, which no permission bit stops)."""
    if how == "below a file":
        (tmp_path / "a-file").write_text("x")
        yield tmp_path / "a-file" / "cache"
        return
    folder = tmp_path / "ro-cache"
    folder.mkdir(mode=0o700)
    if how == "read-only mount":
        command, undo = ["mount", "--bind", "-o", "ro", str(folder), str(folder)], ["umount", "-l", str(folder)]
    else:
        command, undo = ["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot make an unwritable cache folder in CI: {done.stderr.strip()}")
        pytest.skip(f"cannot make an unwritable cache folder ({how}): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(undo, capture_output=True, check=False)


@pytest.mark.parametrize("how", ["below a file", "read-only mount", "immutable"])
def test_a_cache_folder_that_cannot_be_written_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"a", 0o644)})
    images = _images_file(tmp_path, src)
    with unwritable_cache(tmp_path, how) as folder:
        monkeypatch.setenv("FLYTE_IMAGES_CACHE_DIR", str(folder))
        _statcache.reset_shared_stat_cache()
        with pytest.raises(BuildError, match=rf"cache folder {folder} .*FLYTE_IMAGES_CACHE_DIR"):
            flyte_images.build(_image(src), builder=FakeBuilder(), quiet=True)
        assert main(["id", str(images)]) == 0  # the identifier needs no cache
        capsys.readouterr()
        assert main(["dockerfile", f"{images}:img", "--context", str(tmp_path / "ctx")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(folder) in err


def test_build_records_are_read_bounded_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    from flyte_images._plan.explain import breakdown, history, save_record
    from flyte_images._plan.plan import plan

    records = cache_dir() / "records"
    records.mkdir(parents=True)
    os.mkfifo(records / "k1.jsonl")  # a FIFO would block a plain read forever
    assert history("k1") == []
    with (records / "k2.jsonl").open("wb") as big:  # over the bound: not read
        big.truncate(65 << 20)
    assert history("k2") == []

    image = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="rec").with_env_vars({"A": "1"})
    save_record("k3", breakdown(plan(image)))
    assert len(history("k3")) == 1  # the record itself works
    victim = tmp_path / "victim"
    victim.mkdir()
    records.rename(tmp_path / "moved")
    records.symlink_to(victim)
    save_record("k4", breakdown(plan(image)))
    assert list(victim.iterdir()) == []
