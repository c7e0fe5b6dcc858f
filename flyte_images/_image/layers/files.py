"""Layers that copy local files into the image, and the ignore rules that shape what they copy.

The copy layers copy their `_fi/<n>/` folder, never a path naming the file or folder itself:
BuildKit would read a name such as `a[1].py` or `*.py` as a glob pattern (copying nothing, or
other files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..._errors import InvalidLayerArgument
from ..._files.sources import Sources, Staged
from ..._formats.encoding import Encodable
from .base import Inputs, Layer, staged_file

if TYPE_CHECKING:
    from ..._formats.dockerfile import Instructions


@dataclass(frozen=True)
class SourceFile(Layer):
    KIND: ClassVar[str] = "source_file"
    src: Path = Path()
    dst: str = "."

    def inputs(self, sources: Sources, index: int) -> Inputs:
        return Inputs(files=(staged_file(sources, self.src, f"_fi/{index}/{self.src.name}", "source file"),))

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.dst, inputs.files[0][1].entry.identity())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.copy(f"_fi/{index}/", self.dst if self.dst.endswith("/") else self.dst + "/")


@dataclass(frozen=True)
class SourceFolder(Layer):
    KIND: ClassVar[str] = "source_folder"
    src: Path = Path()
    dst: str = "."
    copy_contents_only: bool = False

    def __post_init__(self) -> None:
        if not self.copy_contents_only and not self.src.name:
            raise InvalidLayerArgument("src", f"{self.src} has no folder name; pass copy_contents_only=True")

    @property
    def target_name(self) -> str | None:
        """The folder created under `dst`, or None when only the contents are copied."""
        return None if self.copy_contents_only else self.src.name

    def inputs(self, sources: Sources, index: int) -> Inputs:
        dest = f"_fi/{index}/{self.target_name}" if self.target_name else f"_fi/{index}"
        label = f"{self.target_name}/" if self.target_name else ""
        return Inputs(trees=((label, dest, sources.tree(self.src, dest, project=True)),))

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.dst, self.target_name, inputs.trees[0][2].identity())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.copy(f"_fi/{index}/", self.dst.rstrip("/") + "/")


@dataclass(frozen=True)
class DockerIgnore(Layer):
    """Ignore rules for every folder the image copies (see `_sources`). Nothing is staged:
    the rules shape the file lists of the copy layers."""

    KIND: ClassVar[str] = "dockerignore"
    path: Path = Path(".dockerignore")

    def inputs(self, sources: Sources, index: int) -> Inputs:
        sources_free = Sources(cache=sources.cache)  # read, never staged
        entry, data = sources_free.small_file(self.path, "", "dockerignore file")
        sources.set_dockerignore(self.path, data)
        return Inputs(files=((self.path.name, Staged("", entry)),))

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, inputs.files[0][1].entry.identity()[1:])

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        """Nothing to render."""
