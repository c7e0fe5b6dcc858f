"""The stat cache: a file's SHA-256 remembered under its stat key, so an unchanged file is not read.

Keyed on (device, inode, size, mtime_ns, ctime_ns), in memory and in one file under the user
cache folder; off when `CI` is set or `FLYTE_IMAGES_STAT_CACHE=0`, forced on by
`FLYTE_IMAGES_STAT_CACHE=1`. Nothing whose times are within two seconds of the moment it was
read is remembered: a file written again within the same timestamp tick could keep a stale digest.

Also the rules of every cache file, since what one holds can go straight into an identifier:
`cache_dir` refuses a folder another user could write; a file is `seal`ed (a format line, the
SHA-256 of the payload, the payload) and read bounded, never through a symlink, never from
anything but a regular file (`read_cache_file`); one that fails any of this is ignored whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import marshal
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:
    from .ignore import IgnoreRules

_RACY_NS = 2_000_000_000
# Version 2 added the checksum; the file name carries the version too, so a version-1 file (no
# checksum) is never even read.
_CACHE_FORMAT = b"flyte-images-stat-cache-2\n"
_CACHE_FILE_NAME = "stat-cache-v2.bin"
_MEMO_DIR_NAME = "tree-memo-v1"  # the walks' memo files (see `treememo`), beside the cache file
_CACHE_MAX_ENTRIES = 1_000_000
# The largest cache file we write: an entry is at most ~145 bytes marshalled (five 64-bit ints
# and a 64-character digest), so 1,000,000 entries stay below this. A larger file is not ours.
_CACHE_MAX_BYTES = _CACHE_MAX_ENTRIES * 150 + 4096

StatKey = tuple[int, int, int, int, int]


# Cache folders checked by this process (`cache_dir`): the check costs a stat, once.
_checked_dirs: set[str] = set()

# Folders below the cache folder are the tool's own, so they are never followed when they are
# symlinks (O_NOFOLLOW on the last component): one planted where `staging` or `tree-memo-v1`
# belongs would otherwise send writes and clean-ups to wherever it points.
DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO in place of a cache file or a staged source returns at once (fstat
# then rejects it) instead of waiting for a writer forever.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def cache_dir() -> Path:
    """The user cache folder (`FLYTE_IMAGES_CACHE_DIR`, else `$XDG_CACHE_HOME/flyte-images`);
    ConfigError when another user could write it (checked once per process and folder)."""
    explicit = os.environ.get("FLYTE_IMAGES_CACHE_DIR")
    if explicit:
        path = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "flyte-images"
    key = str(path)
    if key not in _checked_dirs:
        _check_cache_dir(path)
        _checked_dirs.add(key)
    return path


def _check_cache_dir(path: Path) -> None:
    """Make the cache folder (0700) when it is missing; refuse it when it is not the user's own
    or group or others may write it (a sticky bit does not help: a planted file still changes
    identifiers). The folder may be a symlink (a cache on another disk): what it points to is
    checked. One that cannot be made or reached is not refused here: reading it finds nothing,
    and what must write to it (staging) says so when it tries."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)  # 0700 whatever the umask allows: only the user enters it
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    euid = os.geteuid()
    if st.st_uid != euid:
        problem, fix = f"belongs to user id {st.st_uid}, not to you (user id {euid})", f"chown {euid} {path}"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem, fix = f"can be written by other users (mode {stat.S_IMODE(st.st_mode):o})", f"chmod go-w {path}"
    else:
        return
    raise ConfigError(
        f"the flyte-images cache folder {path} {problem}, who could plant files in it that change identifiers "
        f"or that its clean-up deletes; run `{fix}`, or point FLYTE_IMAGES_CACHE_DIR at a folder of your own"
    )


def open_cache_folder(path: Path, *, follow: bool = False) -> int:
    """A descriptor of the folder `path`, made (0700) when missing. OSError when it cannot be
    made, or (unless `follow`: only the cache folder itself may be a link) when it is a symlink."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    return os.open(path, DIR_NOFOLLOW & ~os.O_NOFOLLOW if follow else DIR_NOFOLLOW)


def read_cache_file(path: str | Path, limit: int, head: bytes = b"", *, dir_fd: int | None = None) -> bytes | None:
    """The bytes of a cache file, or None when it is missing or cannot be one the tool wrote:
    a symlink, not a regular file (a FIFO, a device), larger than `limit` bytes, not starting
    with `head` (checked first), or changing while it is read (cache files are replaced whole
    by a rename: nothing beyond the size fstat gives, and `limit`, is read or allocated)."""
    try:
        fd = os.open(path, READ_FLAGS, dir_fd=dir_fd)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit or st.st_size < len(head):
            return None
        if head and os.pread(fd, len(head), 0) != head:
            return None
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(st.st_size + 1)  # one byte more: a file that grew since fstat shows
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == st.st_size else None


def seal(head: bytes, payload: bytes) -> bytes:
    """A cache file's bytes: the format line `head`, the SHA-256 of `payload`, then `payload`."""
    return head + hashlib.sha256(payload).digest() + payload


def unseal(raw: bytes | bytearray | None, head: bytes) -> memoryview | None:
    """The payload of what `seal` made, or None unless its format line and checksum hold."""
    start = len(head) + 32
    if raw is None or len(raw) < start or not raw.startswith(head):
        return None
    payload = memoryview(raw)[start:]
    return payload if hashlib.sha256(payload).digest() == raw[len(head) : start] else None


def unmarshal(payload: memoryview | None) -> Any:
    """The value marshalled in `payload`, or None. Marshal is not meant for damaged input: it
    only ever sees a payload whose checksum held."""
    try:
        return None if payload is None else marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None


def well_formed(keys: list[Any], digests: list[Any]) -> bool:
    """True when every key is a StatKey and every digest 64 lowercase hex digits: all that is
    ever believed of a remembered digest. set(map(...)) runs the loops in C: ~10k entries take
    a few ms, where a Python loop would cost more than the load itself."""
    return (
        set(map(type, keys)) <= {tuple}
        and set(map(len, keys)) <= {5}
        and set(map(type, itertools.chain.from_iterable(keys))) <= {int}
        and set(map(type, digests)) <= {str}
        and set(map(len, digests)) <= {64}
        and _lowercase_hex("".join(digests))
    )


def write_atomically(dir_fd: int, name: str, data: bytes) -> None:
    """Write the file `name` in the folder `dir_fd`: a temporary file (a new name, never
    followed) renamed over it, so a reader sees the old file or the new one, never half of
    one. The temporary file is removed on any failure."""
    tmp = f".{name}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, NEW_FILE, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def is_temporary_name(name: str, written: str) -> bool:
    """True for a temporary name `write_atomically` makes while writing `written`."""
    prefix = f".{written}."
    middle = name[len(prefix) : -len(".tmp")]
    return name.startswith(prefix) and name.endswith(".tmp") and len(middle) == 16 and _lowercase_hex(middle)


def remove_at(parent: int, name: str) -> None:
    """Remove `name` in the folder `parent` and, when it is a folder, everything below it.

    Never through a symlink: every folder is opened with O_NOFOLLOW relative to the one above.
    Without recursion and with two descriptors open at most, so any depth works: the way back up
    is "..", checked to be the folder that was left (one moved meanwhile stops the removal).
    Folders are made writable first, or a staged read-only folder could not be emptied."""
    try:
        fd = os.open(name, DIR_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file or a symlink
            os.unlink(name, dir_fd=parent)
            return
        raise
    try:
        # Per folder being emptied: its name, the identity of the folder it is in, its subfolders left.
        levels = [(name, _identity(parent), _empty_but_folders(fd))]
        while levels:
            here, above, subfolders = levels[-1]
            if subfolders:
                sub = subfolders.pop()
                try:
                    down = os.open(sub, DIR_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # replaced meanwhile
                        os.unlink(sub, dir_fd=fd)
                    elif exc.errno != errno.ENOENT:
                        raise
                    continue
                identity = _identity(fd)
                os.close(fd)
                fd = down
                levels.append((sub, identity, _empty_but_folders(fd)))
                continue
            up = os.open("..", DIR_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = up
            if _identity(fd) != above:
                raise OSError(errno.ESTALE, f"{here} was moved while it was removed")
            os.rmdir(here, dir_fd=fd)
            levels.pop()
    finally:
        os.close(fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _empty_but_folders(fd: int) -> list[str]:
    """Remove everything but the subfolders from the folder `fd`; the subfolders' names."""
    mode = os.fstat(fd).st_mode
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        os.fchmod(fd, stat.S_IMODE(mode) | stat.S_IRWXU)
    folders = []
    with os.scandir(fd) as items:
        for item in items:
            if item.is_dir(follow_symlinks=False):
                folders.append(item.name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.name, dir_fd=fd)
    return folders


class StatCache:
    """Digest per stat key, in memory, loaded from and saved to one file (atomically).

    `trees` remembers whole walks (see `treememo`); with `memo_dir` they are kept between
    processes too, one file per walk in that folder."""

    def __init__(self, path: Path | None, memo_dir: Path | None = None) -> None:
        self._path = path
        self.memo_dir = memo_dir
        self._digests: dict[StatKey, str] | None = None
        self._dirty = False
        self._lock = threading.Lock()
        # The walks' memos (`treememo`), kept for the process; a walk checks what it finds here.
        self.trees: dict[tuple[str, str, IgnoreRules], object] = {}

    def _load(self) -> dict[StatKey, str]:
        digests = self._digests
        if digests is not None:
            return digests
        with self._lock:  # walks run in threads: load once, so no put lands in a dict then replaced
            if self._digests is None:
                path = self._path
                raw = None if path is None else read_cache_file(path, _CACHE_MAX_BYTES, _CACHE_FORMAT)
                # None: a file that is there but unusable, replaced at the next save even if nothing new is learnt.
                loaded = _decode(raw) if raw is not None else None if path and os.path.lexists(path) else {}
                self._dirty = loaded is None
                self._digests = loaded or {}
            return self._digests

    def get(self, key: StatKey) -> str | None:
        return self._load().get(key)

    def put(self, key: StatKey, digest: str, now_ns: int) -> None:
        if _racy(key, now_ns):
            return
        digests = self._load()
        if digests.get(key) == digest:
            return  # known already: nothing to write
        with self._lock:
            if len(digests) >= _CACHE_MAX_ENTRIES:
                digests.clear()
            digests[key] = digest
            self._dirty = True

    def save(self) -> None:
        """Write the cache file if anything was added (or it was unusable); failing to write is not an error."""
        if not self._dirty or self._path is None or self._digests is None:
            return
        with self._lock:
            payload = marshal.dumps(self._digests)
            self._dirty = False
        data = seal(_CACHE_FORMAT, payload)
        if len(data) > _CACHE_MAX_BYTES:
            return  # it would be refused when read back
        try:
            # The file sits in the cache folder itself, which may be a link (see `_check_cache_dir`).
            dfd = open_cache_folder(self._path.parent, follow=True)
            try:
                write_atomically(dfd, self._path.name, data)
            finally:
                os.close(dfd)
        except OSError:
            self._dirty = True  # not written (read-only or full disk): try again at the next save


def _decode(raw: bytes | bytearray) -> dict[StatKey, str] | None:
    """The entries of a cache file's bytes, or None unless format line, checksum and shape hold."""
    loaded = unmarshal(unseal(raw, _CACHE_FORMAT))
    return loaded if type(loaded) is dict and well_formed(list(loaded), list(loaded.values())) else None


def _lowercase_hex(text: str) -> bool:
    try:
        decoded = bytes.fromhex(text)
    except ValueError:
        return False
    # fromhex also skips whitespace and reads upper case; a digest we wrote has neither, and an
    # upper-case digest would change an identifier.
    return len(decoded) * 2 == len(text) and text == text.lower()


_shared_cache: StatCache | None = None


def shared_stat_cache(enabled: bool | None = None) -> StatCache | None:
    """The process-wide stat cache, or None when it is off (`enabled` overrides the environment)."""
    global _shared_cache  # noqa: PLW0603 - one cache per process is the point
    forced = os.environ.get("FLYTE_IMAGES_STAT_CACHE")
    if enabled is None:
        enabled = forced.strip().lower() not in ("0", "false", "no", "off", "") if forced else not os.environ.get("CI")
    if not enabled:
        return None
    if _shared_cache is None:
        folder = cache_dir()
        _shared_cache = StatCache(folder / _CACHE_FILE_NAME, folder / _MEMO_DIR_NAME)
    return _shared_cache


def reset_shared_stat_cache() -> None:
    """Forget the in-memory cache (the file stays) and which cache folders were checked; used
    by tests and benchmarks."""
    global _shared_cache  # noqa: PLW0603
    _shared_cache = None
    _checked_dirs.clear()


def _key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _racy(key: StatKey, now_ns: int) -> bool:
    return now_ns - key[3] < _RACY_NS or now_ns - key[4] < _RACY_NS


def cache_lines(path: Path, head: bytes, limit: int) -> bytes:
    """The entry lines of a file from the newline that ends its format line on (so that every
    line starts after a newline); just that newline when the file is missing, too large or of
    another format."""
    raw = read_cache_file(path, limit, head)
    return b"\n" if raw is None else raw[len(head) - 1 :]


def append_cache_lines(
    path: Path, head: bytes, lines: bytes, compact: int, limit: int, *, follow: bool = False
) -> None:
    """Append `lines` to the file `path`: one that is missing or of another format is started
    anew, and one past `compact` bytes written again with its newer half. OSError when it
    cannot be written, or when its folder is a symlink (unless `follow`: for a file directly in
    the cache folder, which itself may be a link)."""
    dfd = open_cache_folder(path.parent, follow=follow)
    try:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path.name, flags, 0o600, dir_fd=dfd)
        try:
            size = os.fstat(fd).st_size
            if size < len(head) or os.pread(fd, len(head), 0) != head:
                write_atomically(dfd, path.name, head + lines)
            elif size + len(lines) > compact:
                raw = read_cache_file(path.name, limit, head, dir_fd=dfd) or head
                body = raw[len(head) :]
                kept = body[-(compact // 2) :]
                if len(kept) < len(body):  # cut inside a line: from the next whole one
                    kept = kept[kept.find(b"\n") + 1 :] if b"\n" in kept else b""
                write_atomically(dfd, path.name, head + kept + lines)
            else:
                # A line cut short (by a process killed while appending) is ended first, so it
                # spoils no other line.
                cut = os.pread(fd, 1, size - 1) != b"\n"
                os.write(fd, (b"\n" if cut else b"") + lines)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
