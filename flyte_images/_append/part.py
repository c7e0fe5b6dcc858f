"""Which layers of an image are its file part: the trailing layers that only add source files
and folders or set ENV and WORKDIR, appended in the registry without an engine; the layers
before them are the engine part. Pure functions of the layers (every build asks `has_file_part`
to choose its route; nothing here makes a layer).

A WORKDIR belongs to the file part only when a copy makes or has made its folder: the engine
would create any other (owner and mode from the build user), which the file part cannot know.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from .._errors import BuildError
from .._image.layers import DockerIgnore, Env, SourceFile, SourceFolder, WorkDir

if TYPE_CHECKING:
    from .._image.image import Image


def normalize_dst(dst: str) -> str:
    """An absolute destination as a tar path without slashes at either end ("" is the root)."""
    if not dst.startswith("/"):
        raise BuildError(
            f"the copy destination {dst!r} is relative; resolve it against the image's working folder first"
        )
    parts = [p for p in dst.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"the copy destination {dst!r} has '..'; give the folder it means without it")
    return "/".join(parts)


def dst_folders(dst: str) -> list[str]:
    """`dst` and its parents as tar paths, outermost first ("/a/b" -> ["a", "a/b"])."""
    root = normalize_dst(dst)
    parts = root.split("/") if root else []
    return ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]


FILE_PART_KINDS = (SourceFile, SourceFolder, Env, WorkDir, DockerIgnore)
COPY_KINDS = (SourceFile, SourceFolder)


def resolve(workdir: str | None, path: str) -> str | None:
    """`path` against the working folder, as BuildKit does (None when that folder is unknown)."""
    if not path.startswith("/"):
        if workdir is None:
            return None
        path = posixpath.join(workdir or "/", path)
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux reads it as "/".
    return posixpath.normpath("/" + path.lstrip("/"))


def file_part_start(image: Image) -> int:
    """The position of the first layer of the file part (len(layers) when there is none)."""
    layers = image._layers
    start = len(layers)
    while start > 0 and isinstance(layers[start - 1], FILE_PART_KINDS):
        start -= 1
    made: set[str] = set()  # folders copies have made (before the file part too: they exist)
    workdir: str | None = None
    for index, layer in enumerate(layers):
        if isinstance(layer, WorkDir):
            path = resolve(workdir, layer.workdir)
            if index >= start and (path is None or (path != "/" and path.strip("/") not in made)):
                start = index + 1
            workdir = path
        elif isinstance(layer, COPY_KINDS):
            dst = resolve(workdir, layer.dst)
            if dst is not None:
                made.update(dst_folders(dst))
        elif not isinstance(layer, FILE_PART_KINDS):
            made.clear()  # a RUN may remove what earlier copies made
    return start


def engine_layers(image: Image) -> tuple[int, ...]:
    """The positions of the engine part's layers: every layer before the file part, then the
    file part's ignore rules (they render nothing but shape the engine part's own copies)."""
    start = file_part_start(image)
    later = (i for i in range(start, len(image._layers)) if isinstance(image._layers[i], DockerIgnore))
    return (*range(start), *later)


def engine_part(image: Image) -> Image:
    """The image without its file part (see `engine_layers`)."""
    return image._replace(_layers=tuple(image._layers[i] for i in engine_layers(image)))


def has_file_part(image: Image) -> bool:
    """Whether the image ends in layers the file part can add (ignore rules alone do not count)."""
    return any(not isinstance(layer, DockerIgnore) for layer in image._layers[file_part_start(image) :])
