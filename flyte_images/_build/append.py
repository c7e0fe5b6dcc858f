"""The append route: a pushed image that ends in file layers (source files and folders, ENV,
WORKDIR) is its engine part, built by the engine route only when the registry lacks it, plus
its file part appended in the registry without an engine.

The engine part is a subplan of the image's own staged plan (`_plan.subplan`): its identifier,
Dockerfile and context come from the one read of every file, so the engine part built and the
file part appended always describe the same bytes as the image's tag.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _config
from .._append.push import append_file_part, step
from .._append.split import engine_layers, file_part_start, has_file_part
from .._errors import ConfigError
from .._image import Image
from .._interrupt import run_coroutine
from .._plan import BuildPlan, subplan
from .records import remember_pushed
from .result import ImageBuild

if TYPE_CHECKING:
    from flyte_images.builders.base import Progress

APPEND = "append"  # the `builder` name that insists on this route

# The registry upload takes each layer whole (`_append.image.push_layer`): right for source
# code, wrong for model files. A file part holding more than this is built by the engine, which
# streams it.
MAX_APPEND_BYTES = 256 * 1024 * 1024
MAX_APPEND_ENV = "FLYTE_IMAGES_APPEND_MAX_BYTES"


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


def max_append_bytes() -> int:
    text = os.environ.get(MAX_APPEND_ENV, "").strip()
    if not text:
        return MAX_APPEND_BYTES
    if not text.isdigit():
        raise ConfigError(f"{MAX_APPEND_ENV}={text[:40]!r} is not a number of bytes; unset it or give e.g. 268435456")
    return int(text)


def too_big(planned: BuildPlan) -> str | None:
    """Why the file part of `planned` goes to the engine (one line naming its size, its largest
    file, the limit and how to change it), or None when it is appended."""
    start = file_part_start(planned.image)
    size = sum(s.entry.size for inputs in planned.inputs[start:] for s in inputs.manifest())
    limit = max_append_bytes()
    if size <= limit:
        return None
    biggest, name, where = 0, "", ""
    for layer, inputs in zip(planned.image._layers[start:], planned.inputs[start:], strict=True):
        for staged in inputs.manifest():
            if staged.entry.size > biggest:
                biggest, where = staged.entry.size, str(getattr(layer, "dst", ""))
                name = staged.dest.split("/", 2)[-1]  # "_fi/<n>/pkg/model.bin" -> "pkg/model.bin"
    return (
        f"{planned.uri}: its file layers hold {_mib(size)} (the largest, {name} copied to {where}, {_mib(biggest)}), "
        f"over {MAX_APPEND_ENV} ({_mib(limit)}), and an appended layer is uploaded from memory: building the "
        "whole image with the engine, which streams them (same image)"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def append_to(staged: BuildPlan, engine: BuildPlan, digest: str | None, sink: Progress, how: str) -> ImageBuild:
    """Append the file part of `staged` (open) to the engine part `engine`, which is in the
    registry: named by `digest` when the check just answered it (its manifests and configs are
    then read from disk when this machine read them before), else by its tag."""
    started = time.monotonic()
    base = engine.uri
    if digest:
        from .._registry.client import parse_reference

        ref = parse_reference(engine.uri)
        base = f"{ref.host}/{ref.repository}@{digest}"

    async def push() -> tuple[str, int]:
        from .._registry.push import Pusher

        async with Pusher(insecure=_config.insecure_registries()) as pusher:
            return await append_file_part(pusher, staged, base, lambda text: step(sink, text))

    pushed, count = run_coroutine(push())
    step(sink, f"pushed {staged.uri} ({count} layer(s) appended, {time.monotonic() - started:.2f} s)")
    remember_pushed(staged, pushed)
    return ImageBuild(staged.uri, built=True, digest=pushed, dockerfile=staged.dockerfile, reason=how, path="append")


def notice(text: str, progress: Progress | None, quiet: bool) -> None:
    """A line the user should see whatever view shows the build: a step of `progress` when
    there is one, else stderr unless quiet."""
    if progress is not None:
        step(progress, text)
    elif not quiet:
        print(text, file=sys.stderr)
