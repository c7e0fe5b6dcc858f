"""The stat cache file verifies itself: anything but an intact file of ours is ignored, never trusted."""

from __future__ import annotations

import hashlib
import marshal
from pathlib import Path
from typing import Any

import pytest
from conftest import write_tree

from flyte_images import Image
from flyte_images._files import statcache
from flyte_images._files.ignore import DEFAULT_EXCLUDES, IgnoreRules
from flyte_images._files.statcache import StatCache, StatKey, cache_dir, reset_shared_stat_cache
from flyte_images._files.tree import collect_tree
from flyte_images._plan.plan import image_digest

CONTENT = b"print('hello')\n"
REAL_DIGEST = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture(autouse=True)
def _trust_fresh_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "_RACY_NS", 0)  # files written by the test are seconds old at most


def filled(tmp_path: Path) -> tuple[Path, Path, StatKey]:
    """A source folder with one file, a cache file remembering it, and that file's stat key."""
    root = tmp_path / "src"
    write_tree(root, {"a.py": (CONTENT, 0o644)})
    store = tmp_path / "stat-cache.bin"
    collect_tree(root, IgnoreRules.from_lines(DEFAULT_EXCLUDES), StatCache(store))
    st = (root / "a.py").stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    assert StatCache(store).get(key) == REAL_DIGEST
    return root, store, key


def digest_of(root: Path, cache: StatCache) -> str | None:
    return collect_tree(root, IgnoreRules.from_lines(DEFAULT_EXCLUDES), cache).entries[0].digest


def file_of(payload: Any) -> bytes:
    """Bytes in the current format, with a correct checksum, around any marshalled payload."""
    body = marshal.dumps(payload)
    return statcache._CACHE_FORMAT + hashlib.sha256(body).digest() + body


def test_a_flipped_digest_digit_is_not_trusted(tmp_path: Path) -> None:
    root, store, _ = filled(tmp_path)
    raw = store.read_bytes()
    at = raw.index(REAL_DIGEST.encode())
    wrong = b"1" if raw[at : at + 1] != b"1" else b"2"
    store.write_bytes(raw[:at] + wrong + raw[at + 1 :])
    assert digest_of(root, StatCache(store)) == REAL_DIGEST  # hashed again, not read from the file


@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_any_flipped_byte_makes_the_whole_file_ignored(tmp_path: Path, bit: int) -> None:
    _, store, key = filled(tmp_path)
    good = store.read_bytes()
    for index in range(len(good)):
        damaged = bytearray(good)
        damaged[index] ^= bit
        store.write_bytes(bytes(damaged))
        assert StatCache(store).get(key) is None, f"byte {index} of {len(good)} flipped yet trusted"


def test_a_truncated_file_is_ignored(tmp_path: Path) -> None:
    _, store, key = filled(tmp_path)
    good = store.read_bytes()
    for length in range(len(good)):
        store.write_bytes(good[:length])
        assert StatCache(store).get(key) is None, f"cut at {length} of {len(good)} yet trusted"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        bytes(range(256)) * 4,
        b"flyte-images-stat-cache-1\n" + marshal.dumps({(1, 2, 3, 4, 5): REAL_DIGEST}),  # version 1
        statcache._CACHE_FORMAT + b"\0" * 32 + marshal.dumps({(1, 2, 3, 4, 5): REAL_DIGEST}),  # bad checksum
    ],
)
def test_garbage_and_old_files_are_ignored(tmp_path: Path, content: bytes) -> None:
    store = tmp_path / "cache.bin"
    store.write_bytes(content)
    assert StatCache(store).get((1, 2, 3, 4, 5)) is None


HEX = REAL_DIGEST


@pytest.mark.parametrize(
    "payload",
    [
        [((1, 2, 3, 4, 5), HEX)],
        None,
        {(1, 2, 3, 4): HEX},
        {(1, 2, 3, 4, 5, 6): HEX},
        {(1, 2, 3, 4, "5"): HEX},
        {(1, 2, 3, 4, 5.0): HEX},
        {(1, 2, 3, 4, True): HEX},
        {"12345": HEX},
        {(1, 2, 3, 4, 5): HEX.upper()},
        {(1, 2, 3, 4, 5): HEX[:-1]},
        {(1, 2, 3, 4, 5): HEX + "0"},
        {(1, 2, 3, 4, 5): HEX[:-2] + " 0"},
        {(1, 2, 3, 4, 5): HEX[:-1] + "g"},
        {(1, 2, 3, 4, 5): HEX[:-1] + "\u0660"},
        {(1, 2, 3, 4, 5): HEX.encode()},
        {(1, 2, 3, 4, 5): None},
        {(9, 9, 9, 9, 9): HEX, (1, 2, 3, 4, 5): 5},  # one bad entry spoils the whole file
    ],
)
def test_a_checksummed_file_of_the_wrong_shape_is_ignored(tmp_path: Path, payload: Any) -> None:
    store = tmp_path / "cache.bin"
    store.write_bytes(file_of(payload))
    cache = StatCache(store)
    assert cache.get((1, 2, 3, 4, 5)) is None
    assert cache.get((9, 9, 9, 9, 9)) is None


def test_a_well_formed_file_of_many_entries_loads(tmp_path: Path) -> None:
    entries = {(2049, i, i * 7, 1_700_000_000_000_000_000 + i, -i): f"{i:064x}" for i in range(1000)}
    store = tmp_path / "cache.bin"
    store.write_bytes(file_of(entries))
    cache = StatCache(store)
    assert cache.get((2049, 999, 6993, 1_700_000_000_000_000_999, -999)) == f"{999:064x}"
    store.write_bytes(file_of({}))
    assert StatCache(store).get((2049, 1, 7, 1_700_000_000_000_000_001, -1)) is None


def test_a_damaged_file_is_rewritten_and_then_verifies(tmp_path: Path) -> None:
    root, store, key = filled(tmp_path)
    store.write_bytes(store.read_bytes()[:-1])
    cache = StatCache(store)
    assert cache.get(key) is None
    cache.save()  # nothing new learnt, but the damaged file is replaced all the same
    assert statcache._decode(store.read_bytes()) == {}
    assert digest_of(root, cache) == REAL_DIGEST  # hashes again and saves
    assert statcache._decode(store.read_bytes()) == {key: REAL_DIGEST}
    assert StatCache(store).get(key) == REAL_DIGEST


def test_a_missing_file_is_not_written_until_something_is_learnt(tmp_path: Path) -> None:
    store = tmp_path / "cache.bin"
    cache = StatCache(store)
    assert cache.get((1, 2, 3, 4, 5)) is None
    cache.save()
    assert not store.exists()


def test_an_unusable_path_is_never_an_error(tmp_path: Path) -> None:
    cache = StatCache(tmp_path)  # a folder: cannot be read as a file nor replaced by one
    assert cache.get((1, 2, 3, 4, 5)) is None
    cache.put((1, 2, 3, 4, 5), REAL_DIGEST, 10**19)
    cache.save()
    assert cache.get((1, 2, 3, 4, 5)) == REAL_DIGEST


def test_the_identifier_is_right_after_the_shared_cache_file_is_damaged(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write_tree(root, {"a.py": (CONTENT, 0o644)})
    image = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_source_folder(root)
    uncached = image_digest(image, use_stat_cache=False)
    assert image_digest(image, use_stat_cache=True) == uncached
    (store,) = cache_dir().glob("stat-cache-*")
    assert "v1" not in store.name  # version-1 files (no checksum) are never read
    raw = store.read_bytes()
    at = raw.index(REAL_DIGEST.encode())
    store.write_bytes(raw[:at] + (b"0" if raw[at] != ord("0") else b"1") + raw[at + 1 :])
    reset_shared_stat_cache()
    assert image_digest(image, use_stat_cache=True) == uncached
