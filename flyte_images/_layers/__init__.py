"""Layer kinds: frozen values holding their normalised arguments (see `base`).

A new layer kind is one class in one of these modules (inputs, identity, render, describe)
plus its `with_*` method on `Image`, and nothing else.
"""

from .base import Files, Inputs, Layer
from .files import DockerIgnore, SourceFile, SourceFolder
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
from .system import AptPackages, Commands, DebianBase, Env, WorkDir

__all__ = [
    "POETRY_VERSION",
    "AptPackages",
    "Commands",
    "DebianBase",
    "DockerIgnore",
    "Env",
    "Files",
    "Inputs",
    "Layer",
    "PipPackages",
    "PoetryProject",
    "ProjectInstallMode",
    "PythonWheels",
    "Requirements",
    "SourceFile",
    "SourceFolder",
    "UVProject",
    "UVScript",
    "WorkDir",
]
