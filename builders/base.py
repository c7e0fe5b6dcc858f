"""The one seam between the engine and a build backend.

A backend builds one rendered, staged image for some platforms, pushes it or loads it into
the local engine, reports progress line by line, and returns the reference and digest.
Built-in backends and third-party ones (entry point group `flyte_images.builders`) implement
the same `Builder` protocol; nothing else in flyte-images knows which one runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True)
class SecretSource:
    """Where a build secret's value comes from: an environment variable or a file.

    Only the name of the variable or the path is carried, never the value.
    """

    id: str
    env: str | None = None
    file: Path | None = None

    def buildkit_spec(self) -> str:
        return f"id={self.id},env={self.env}" if self.env else f"id={self.id},src={self.file}"


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    tags: tuple[str, ...]
    platforms: tuple[str, ...]
    push: bool
    secrets: tuple[SecretSource, ...] = ()
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    redact: tuple[str, ...] = ()  # values that must never appear in progress or errors


@dataclass(frozen=True)
class BuildResult:
    reference: str
    digest: str | None  # the pushed manifest digest, or the loaded image id


Progress = Callable[[str], None]


@runtime_checkable
class Builder(Protocol):
    """A build backend: one verb."""

    name: ClassVar[str]

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult: ...
