"""Layer kinds: frozen values holding their normalised arguments (see `base`).

A new layer kind is one class in one of these modules (inputs, identity, render, describe)
plus its `with_*` method on `Image`, and nothing else.

The names below are imported when first used (PEP 562): an image that only copies files never
loads the Python, pixi or code-bundle layer kinds.
"""

from typing import TYPE_CHECKING

# The poetry the renderer installs (see `python`); kept here because every identifier includes
# it (see `_identity`), and reading it must not load every layer kind.
POETRY_VERSION = "2.2.1"

if TYPE_CHECKING:
    from .base import Files, Inputs, Layer
    from .code import COPY_STYLES, CodeBundle, CopyStyle, resolve_code_bundle_layer
    from .files import DockerIgnore, SourceFile, SourceFolder
    from .pixi import PIXI_VERSION, PixiProject, PixiScript
    from .python import PipPackages, PoetryProject, ProjectInstallMode, PythonWheels, Requirements, UVProject, UVScript
    from .system import BASE_APT_PACKAGES, AptPackages, Commands, DebianBase, Env, WorkDir

_LAZY = {
    **dict.fromkeys(("Files", "Inputs", "Layer"), ".base"),
    **dict.fromkeys(("COPY_STYLES", "CodeBundle", "CopyStyle", "resolve_code_bundle_layer"), ".code"),
    **dict.fromkeys(("DockerIgnore", "SourceFile", "SourceFolder"), ".files"),
    **dict.fromkeys(("PIXI_VERSION", "PixiProject", "PixiScript"), ".pixi"),
    **dict.fromkeys(
        ("PipPackages", "PoetryProject", "ProjectInstallMode", "PythonWheels", "Requirements", "UVProject", "UVScript"),
        ".python",
    ),
    **dict.fromkeys(("BASE_APT_PACKAGES", "AptPackages", "Commands", "DebianBase", "Env", "WorkDir"), ".system"),
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
