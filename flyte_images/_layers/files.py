"""Layers that copy local files into the image, and the ignore rules that shape what they copy."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .. import _quote as q
from .._encoding import Encodable
from .._sources import Sources, Staged
from .base import Inputs, Layer

if TYPE_CHECKING:
    from .._render import Instructions


@dataclass(frozen=True)
class SourceFile(Layer):
    KIND: ClassVar[str] = "source_file"
    src: Path = Path()
    dst: str = "."

    def inputs(self, sources: Sources, index: int) -> Inputs:
        dest = f"_fi/{index}/{self.src.name}"
        return Inputs(files=((self.src.name, Staged(dest, sources.file(self.src, dest, "source file"))),))

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.dst, inputs.files[0][1].entry.identity())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        dest = self.dst if self.dst.endswith("/") else self.dst + "/"
        out.add(f"COPY {q.json_words([inputs.files[0][1].dest, dest])}")


@dataclass(frozen=True)
class SourceFolder(Layer):
    KIND: ClassVar[str] = "source_folder"
    src: Path = Path()
    dst: str = "."
    copy_contents_only: bool = False

    @property
    def target_name(self) -> str | None:
        """The folder created under `dst`, or None when only the contents are copied."""
        return None if self.copy_contents_only else self.src.name

    def inputs(self, sources: Sources, index: int) -> Inputs:
        dest = f"_fi/{index}/{self.target_name or 'contents'}"
        label = f"{self.target_name}/" if self.target_name else ""
        return Inputs(trees=((label, dest, sources.tree(self.src, dest)),))

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.dst, self.target_name, inputs.trees[0][2].identity())

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        name = self.target_name
        dest = posixpath.join(self.dst, name) if name else self.dst
        out.add(f"COPY {q.json_words([inputs.trees[0][1], dest.rstrip('/') + '/'])}")


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
