"""The append route: a pushed image that ends in file layers (source files and folders, ENV,
WORKDIR) is its engine part, built by the engine route only when the registry lacks it, plus
its file part appended in the registry without an engine.

The engine part is a subplan of the image's own staged plan (`_plan.subplan`): its identifier,
Dockerfile and context come from the one read of every file, so the engine part built and the
file part appended always describe the same bytes as the image's tag.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._append.part import engine_layers, has_file_part
from .._errors import ConfigError
from .._image.image import Image
from .._plan.plan import BuildPlan, subplan
from .records import remember_pushed
from .result import ImageBuild

if TYPE_CHECKING:
    from flyte_images.builders.base import Progress

    from .._registry import Registry

APPEND = "append"  # the `builder` name that insists on this route


@dataclass(frozen=True)
class Choice:
    """Which route a build takes and why (said in progress, the result and `explain`)."""

    append: bool
    why: str


def choose(image: Image, builder: object, pushing: bool) -> Choice:
    """The append route when the image is pushed and ends in file layers, unless `builder` names
    an engine backend; `builder="append"` insists (and says why when it cannot)."""
    forced = builder == APPEND
    if builder is not None and not forced:
        return Choice(False, f"the builder {getattr(builder, 'name', builder)!s} was asked for")
    if image.is_reference:
        return Choice(False, "an existing image")
    if not pushing:
        if forced:
            raise ConfigError(
                "builder='append' writes the image into a registry, but this build loads it into the local "
                "engine: give the image a registry (or --push), or build with an engine builder"
            )
        return Choice(False, "loaded into the local engine")
    if not has_file_part(image):
        return Choice(False, "no trailing file layers (source files and folders, env vars, workdir) to append")
    return Choice(True, "pushed, and it ends in file layers")


def engine_subplan(planned: BuildPlan) -> BuildPlan:
    """The engine part of `planned`, from what it already read (and staged)."""
    return subplan(planned, engine_layers(planned.image))


async def append_to(
    registry: Registry,
    staged: BuildPlan,
    engine: BuildPlan,
    digest: str | None,
    sink: Progress,
    how: str,
    compression: str | None = None,
) -> ImageBuild:
    """Append the file part of `staged` (open) to the engine part `engine`, which is in the
    registry: named by `digest` when the check just answered it (its manifests and configs are
    then read from disk when this machine read them before), else by its tag. `compression` of
    the appended layers: the one asked, else (None) the engine part's."""
    from .._append.push import append_file_part, step  # here: the engine route never makes layers

    started = time.monotonic()
    base = engine.uri
    if digest:
        from .._registry import parse_reference  # here: the registry client loads httpx

        ref = parse_reference(engine.uri)
        base = f"{ref.host}/{ref.repository}@{digest}"
    pushed, count = await append_file_part(registry, staged, base, lambda text: step(sink, text), compression)
    step(sink, f"pushed {staged.uri} ({count} layer(s) appended, {time.monotonic() - started:.2f} s)")
    remember_pushed(staged, pushed)
    return ImageBuild(staged.uri, built=True, digest=pushed, dockerfile=staged.dockerfile, reason=how, path="append")
