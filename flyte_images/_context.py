"""Staging the build context: a fresh folder holding exactly what the Dockerfile references.

Written deterministically: entries in the walk's sorted order, relative paths, the permission
bits the identifier saw, and one fixed modification time (2000-01-01) on everything, so the
same inputs give the same COPY layers on every machine. Every file is hashed again while it is
copied: if a file changed after the identifier was computed the build stops, instead of
pushing an image whose tag describes other bytes. The folder is removed when the `with` block
ends, on success and on every failure path alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ._errors import BuildError
from ._files import DIR, FILE, LINK, Tree
from ._render import ContextItem, Rendered
from ._uvbin import target_arch, uv_binary

FIXED_MTIME = 946_684_800  # 2000-01-01T00:00:00Z
_CHUNK = 1 << 20


@contextlib.contextmanager
def staged_context(rendered: Rendered, keep: Path | None = None) -> Iterator[Path]:
    """Yield a folder with the Dockerfile and every staged item; remove it afterwards.

    With `keep`, the context is written there (it must be empty or absent) and not removed.
    For a `from_dockerfile` image the user's own folder is the context and nothing is written.
    """
    if rendered.context_dir is not None and keep is None:
        yield rendered.context_dir
        return
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise BuildError(f"{keep} is not empty; give an empty or new folder for the context")
        root = keep
    else:
        root = Path(tempfile.mkdtemp(prefix="flyte-images-context-"))
    try:
        write_context(rendered, root)
        yield root
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def write_context(rendered: Rendered, root: Path) -> None:
    if rendered.context_dir is not None:
        shutil.copytree(rendered.context_dir, root, symlinks=True, dirs_exist_ok=True)
        return
    (root / "Dockerfile").write_text(rendered.dockerfile, encoding="utf-8")
    for item in rendered.items:
        _stage(root, item)
    for platform in rendered.uv_platforms:
        target = root / "_fi" / "uv" / target_arch(platform) / "uv"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(uv_binary(platform), target)
        target.chmod(0o755)
    _fix_times(root)


def _stage(root: Path, item: ContextItem) -> None:
    dest = root / item.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if item.tree is None:
        mode = stat.S_IMODE(os.stat(item.source).st_mode)
        _copy_verified(item.source, dest, item.digest, mode)
    else:
        _stage_tree(item.source, dest, item.tree)


def _stage_tree(source: Path, dest: Path, tree: Tree) -> None:
    dest.mkdir(exist_ok=True)
    dir_modes: list[tuple[Path, int]] = [(dest, stat.S_IMODE(os.stat(source).st_mode))]
    for entry in tree.entries:
        target = dest / entry.path
        if entry.kind == DIR:
            target.mkdir(exist_ok=True)
            dir_modes.append((target, entry.mode))
        elif entry.kind == LINK:
            target.symlink_to(entry.digest)
        elif entry.kind == FILE:
            _copy_verified(source / entry.path, target, entry.digest, entry.mode)
    for folder, mode in reversed(dir_modes):  # deepest first, so a read-only folder is filled first
        folder.chmod(mode)


def _copy_verified(source: Path, dest: Path, digest: str, mode: int) -> None:
    hasher = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(dest, "wb") as dst:
            while chunk := src.read(_CHUNK):
                hasher.update(chunk)
                dst.write(chunk)
    except FileNotFoundError as exc:
        raise BuildError(f"{source} disappeared after the image identifier was computed; run again") from exc
    if digest and hasher.hexdigest() != digest:
        raise BuildError(
            f"{source} changed after the image identifier was computed; run again so the tag "
            "describes the files that are built"
        )
    dest.chmod(mode)


def _fix_times(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in (*filenames, *dirnames):
            with contextlib.suppress(FileNotFoundError, NotImplementedError):
                os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))
