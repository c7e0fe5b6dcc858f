"""The one seam between flyte-images and a build backend.

A backend owns everything that talks to an engine: whether an image is in the engine's own
store (`local_exists`), and building one staged context for some platforms, then pushing it or
loading it (`build`). It reports progress as `ProgressEvent`s made by the shared
`builders.output.BuildOutput` helper, which also redacts secret values and remembers what a
failed step printed. Built-in backends and third-party ones are found the same way, by name in
the entry-point group `flyte_images.builders`; nothing else in flyte-images knows which one runs.

Every backend passes one conformance suite (tests/test_conformance.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

IDENTITY_LABEL = "dev.flyte-images.identifier"


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
    """One staged build: the context folder holds exactly the files the tag was computed from."""

    context: Path
    dockerfile: Path
    tags: tuple[str, ...]
    platforms: tuple[str, ...]
    push: bool
    secrets: tuple[SecretSource, ...] = ()
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    redact: tuple[str, ...] = ()  # secret values that must never appear in progress or errors


@dataclass(frozen=True)
class BuildResult:
    reference: str
    digest: str | None  # the pushed manifest digest, or the loaded image id


@dataclass(frozen=True)
class ProgressEvent:
    """One thing a build reports, already redacted.

    kind "step": a step started (`step` is its title, e.g. "[2/5] RUN uv pip install ...");
    kind "log": a line of output (`step` is the title of the step that printed it, or "").
    `line` is the raw (redacted) line as the engine printed it, for plain logs.
    """

    kind: Literal["step", "log"]
    step: str
    text: str
    line: str


Progress = Callable[[ProgressEvent], None]


@runtime_checkable
class Builder(Protocol):
    """A build backend."""

    name: ClassVar[str]

    def local_exists(self, reference: str) -> bool | None:
        """Whether `reference` is in the engine's local image store; None when it cannot tell."""
        ...

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        """Build, then push (request.push) or load into the local store; raise a BuildError."""
        ...


def load_one_platform(request: BuildRequest, progress: Progress, host: str) -> BuildRequest:
    """What every backend does when asked to load several platforms into a local image store
    that keeps one platform per tag: load `host` (the engine's own platform, else the first one
    asked for) and say which were not loaded, rather than fail."""
    import dataclasses
    import warnings

    chosen = host if host in request.platforms else request.platforms[0]
    left = [p for p in request.platforms if p != chosen]
    why = (
        f"loading {chosen} only; not loaded: {', '.join(left)} (this engine's image store keeps one platform per "
        "tag: push to a registry to keep them all, or turn on Docker's containerd image store)"
    )
    warnings.warn(why, UserWarning, stacklevel=3)
    progress(ProgressEvent("log", "", why, why))
    return dataclasses.replace(request, platforms=(chosen,))
