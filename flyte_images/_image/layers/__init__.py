"""Layer kinds: frozen values holding their normalised arguments (see `base`).

A new layer kind is one class in one of these modules (inputs, identity, render, describe)
plus its `with_*` method on `Image`, and nothing else. The Python and pixi kinds are imported
when first used (PEP 562): an image that only copies files never loads them.
"""

from typing import TYPE_CHECKING

from .base import POETRY_VERSION, Files, Inputs, Layer
from .code import COPY_STYLES, CodeBundle, CopyStyle, resolve_code_bundle_layer
from .files import DockerIgnore, SourceFile, SourceFolder
from .system import BASE_APT_PACKAGES, AptPackages, Commands, DebianBase, Env, WorkDir

if TYPE_CHECKING:
    from .pixi import PIXI_VERSION, PixiProject, PixiScript
    from .python import PipPackages, PoetryProject, ProjectInstallMode, PythonWheels, Requirements, UVProject, UVScript

_LAZY = {
    **dict.fromkeys(("PIXI_VERSION", "PixiProject", "PixiScript"), ".pixi"),
    **dict.fromkeys(
        ("PipPackages", "PoetryProject", "ProjectInstallMode", "PythonWheels", "Requirements", "UVProject", "UVScript"),
        ".python",
    ),
}


def __getattr__(name: str) -> object:
    from ..._lazy import attribute

    return attribute(__name__, _LAZY, name, globals())


__all__ = [
    "BASE_APT_PACKAGES",
    "COPY_STYLES",
    "PIXI_VERSION",
    "POETRY_VERSION",
    "AptPackages",
    "CodeBundle",
    "Commands",
    "CopyStyle",
    "DebianBase",
    "DockerIgnore",
    "Env",
    "Files",
    "Inputs",
    "Layer",
    "PipPackages",
    "PixiProject",
    "PixiScript",
    "PoetryProject",
    "ProjectInstallMode",
    "PythonWheels",
    "Requirements",
    "SourceFile",
    "SourceFolder",
    "UVProject",
    "UVScript",
    "WorkDir",
    "resolve_code_bundle_layer",
]
