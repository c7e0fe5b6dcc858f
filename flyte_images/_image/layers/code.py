"""`with_code_bundle`: the project's code baked into the image, as the Flyte SDK does it.

The layer is deferred: `resolve_code_bundle_layer(image, copy_style, root_dir)` sets the project
root when a deploy knows how code reaches its tasks. With copy_style "none" the code must be in
the image: "all" copies the root folder (ignore rules applied), "loaded_modules" the files of
the modules this process imported from it. Any other copy_style drops the layers (the code is
bundled separately); a layer never resolved (a plain `build(image)`) copies nothing.
"""

from __future__ import annotations

import os
import site
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from ..._files.sources import Sources
from ..._formats.encoding import Encodable
from .base import Inputs, Layer, staged_file

if TYPE_CHECKING:
    from ..._formats.dockerfile import Instructions

CopyStyle = Literal["loaded_modules", "all"]
COPY_STYLES: tuple[str, ...] = ("loaded_modules", "all")
T = TypeVar("T")


@dataclass(frozen=True)
class CodeBundle(Layer):
    KIND: ClassVar[str] = "code_bundle"
    copy_style: CopyStyle = "loaded_modules"
    dst: str = "."
    root_dir: Path | None = None  # set by resolve_code_bundle_layer; None: nothing is copied

    def inputs(self, sources: Sources, index: int) -> Inputs:
        if self.root_dir is None:
            return Inputs()
        dest = f"_fi/{index}"
        if self.copy_style == "all":
            return Inputs(trees=(("", dest, sources.tree(self.root_dir, dest, project=True)),))
        files = []
        for path in loaded_module_files(self.root_dir):
            rel = path.relative_to(self.root_dir).as_posix()
            files.append(staged_file(sources, path, f"{dest}/{rel}", "loaded module", rel))
        return Inputs(files=tuple(files))

    def identity(self, inputs: Inputs) -> Encodable:
        if self.root_dir is None:
            return (self.KIND, self.copy_style, self.dst, None)
        if inputs.trees:
            return (self.KIND, self.copy_style, self.dst, inputs.trees[0][2].identity())
        files = tuple((label, *s.entry.identity()[1:]) for label, s in inputs.files)
        return (self.KIND, self.copy_style, self.dst, files)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        if inputs.files or inputs.trees:  # none when unresolved: the code comes with the run
            out.copy(f"_fi/{index}/", self.dst.rstrip("/") + "/")


def loaded_module_files(root: Path) -> list[Path]:
    """Files of the modules imported in this process that live below `root` and are not
    installed packages, the standard library or flyte-images itself (the SDK's rule), sorted."""
    own = Path(os.path.normpath(os.path.abspath(__file__))).parent.parent  # as module paths are made
    installed = [
        own,
        *(Path(p) for p in (sys.prefix, sys.base_prefix, site.getusersitepackages(), *site.getsitepackages())),
    ]
    found = set()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if not isinstance(name, str):
            continue
        path = Path(os.path.normpath(os.path.abspath(name)))
        if not path.is_relative_to(root) or any(path.is_relative_to(d) for d in installed):
            continue
        if path.is_file():
            found.add(path)
    return sorted(found)


def resolve_code_bundle_layer(image: T, copy_style: str, root_dir: Path) -> T:
    """`image` with its code-bundle layers resolved for a run whose code travels by
    `copy_style` (see the module docstring); the same image when it has none."""
    layers = image._layers  # type: ignore[attr-defined]
    if not any(isinstance(layer, CodeBundle) for layer in layers):
        return image
    root = Path(os.path.normpath(Path(root_dir).absolute()))
    if copy_style != "none":
        kept = tuple(layer for layer in layers if not isinstance(layer, CodeBundle))
    else:
        kept = tuple(replace(layer, root_dir=root) if isinstance(layer, CodeBundle) else layer for layer in layers)
    return image._replace(_layers=kept)  # type: ignore[attr-defined, no-any-return]
