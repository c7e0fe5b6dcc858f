"""Layer kinds: frozen values holding their normalised arguments (see `base`).

A new layer kind is one class in one of these modules (inputs, identity, render, describe)
plus its `with_*` method on `Image`, and nothing else.
"""

from .base import Files, Inputs, Layer
from .code import COPY_STYLES, CodeBundle, CopyStyle, resolve_code_bundle_layer
from .files import DockerIgnore, SourceFile, SourceFolder
from .pixi import PIXI_VERSION, PixiProject, PixiScript
from .python import (
    POETRY_VERSION,
    PipPackages,
    PoetryProject,
    ProjectInstallMode,
    PythonWheels,
    Requirements,
    UVProject,
    UVScript,
)
from .system import BASE_APT_PACKAGES, AptPackages, Commands, DebianBase, Env, WorkDir

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
