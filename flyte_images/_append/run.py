"""`build_image` on the append path: the skip rule for the image and its engine part in one round
of requests, the engine part built only when missing (or forced), the file part appended."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._image import Image
from .._interrupt import run_coroutine
from .._plan import BuildPlan, plan, staged_plan
from .._render import RenderOptions
from .build import append_file_part, check_engine_part, engine_plan, step
from .split import engine_part, file_part_start

if TYPE_CHECKING:
    from flyte_images.builders.base import Progress

    from .._build import ImageBuild
    from .._skip import Decision


# Layer tarballs are made as streams (`tarball`), but the registry upload takes each one whole
# (`image.push_layer`): right for source code, wrong for model files. A file part holding more
# than this is built by the engine, which streams it.
MAX_APPEND_BYTES = 256 * 1024 * 1024
MAX_APPEND_ENV = "FLYTE_IMAGES_APPEND_MAX_BYTES"


def max_append_bytes() -> int:
    text = os.environ.get(MAX_APPEND_ENV, "").strip()
    if not text:
        return MAX_APPEND_BYTES
    if not text.isdigit():
        raise ConfigError(f"{MAX_APPEND_ENV}={text[:40]!r} is not a number of bytes; unset it or give e.g. 268435456")
    return int(text)


def file_part_bytes(staged: BuildPlan) -> int:
    """The size of the files the file part copies."""
    start = file_part_start(staged.image)
    return sum(s.entry.size for inputs in staged.inputs[start:] for s in inputs.manifest())


def too_big(planned: BuildPlan) -> str | None:
    """Why the file part of `planned` goes to the engine (one line naming its size, its largest
    file, the limit and how to change it), or None when it is appended."""
    size, limit = file_part_bytes(planned), max_append_bytes()
    if size <= limit:
        return None
    start = file_part_start(planned.image)
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


def by_append(
    image: Image,
    options: RenderOptions,
    *,
    uri: str | None,
    dry_run: bool,
    force: bool,
    strict: bool,
    quiet: bool,
    announce: Callable[[str], None] | None,
    progress: Progress | None,
    engine_options: dict[str, Any],
    on_fallback: Callable[[str], None] | None = None,
) -> ImageBuild | None:
    """The image built on the append path, or None when it must take the engine path: its file
    part is over FLYTE_IMAGES_APPEND_MAX_BYTES, which `builder="append"` cannot change either,
    since the engine makes the same image. Refusing would fail a build over how it is made, not
    what it makes; a build loaded into the local engine is refused (`build.choose`) because
    appending cannot make that at all.

    The one-line reason for the engine path goes to `on_fallback` when given (for a caller that
    says it once it has announced the build: a progress view may show nothing before that),
    else to `progress` as a step, else to stderr unless quiet."""
    from .._build import ImageBuild, _record, _skipped

    if dry_run:
        planned = plan(image, options, uri=uri)
        engine = engine_plan(planned)
        full, part = _decide(planned, engine, strict, quiet)
        if not force and not full.build:
            return _skipped(planned, full)
        why = too_big(planned)
        if why is not None:
            _fall_back(why, progress, quiet, on_fallback)
            return None
        how = "in the registry" if not part.build and not force else "after building it with the engine"
        layers = len(image._layers) - file_part_start(image)
        reason = f"dry run: would append {layers} file layer(s) to the engine part {engine.uri} ({how})"
        return ImageBuild(planned.uri, built=False, reason=reason, dockerfile=planned.dockerfile, path="append")
    with staged_plan(image, options, uri=uri) as staged:
        engine = engine_plan(staged)
        check_engine_part(staged, engine)
        full, part = _decide(staged, engine, strict, quiet)
        if not force and not full.build:
            _record(staged)
            return _skipped(staged, full)
        why = too_big(staged)
        if why is not None:
            _fall_back(why, progress, quiet, on_fallback)
            return None
        if announce is not None:
            announce(staged.uri)
        with _sink(progress, quiet, staged.uri) as sink:
            return _append(staged, engine, part, force, quiet, sink, engine_options)


def _append(
    staged: BuildPlan,
    engine: BuildPlan,
    part: Decision,
    force: bool,
    quiet: bool,
    sink: Progress,
    engine_options: dict[str, Any],
) -> ImageBuild:
    from .._build import ImageBuild, _record, build_image, remember_pushed
    from .._builders import get_builder

    started = time.monotonic()
    if part.build or force:
        why = "forced" if force else part.reason
        step(sink, f"engine part {engine.uri}: {why}; building it with the engine")
        options = dict(engine_options)
        backend = get_builder(options.pop("builder"))
        built = build_image(
            engine_part(staged.image), force=force, push=True, builder=backend, quiet=quiet, progress=sink, **options
        )
        check_engine_part(staged, engine, built.uri)
        how = f"engine part {engine.uri} built by the engine ({backend.name}), file part appended"
    else:
        step(sink, f"engine part {engine.uri}: in the registry ({part.reason})")
        how = f"file part appended to the engine part {engine.uri}, which was in the registry"

    # The engine part by the digest the registry just answered for its tag: its manifests and
    # configs are then read from disk when this machine read them before.
    base = engine.uri
    if not (part.build or force) and part.digest:
        from .._registry.client import parse_reference

        ref = parse_reference(engine.uri)
        base = f"{ref.host}/{ref.repository}@{part.digest}"

    async def push() -> tuple[str, int]:
        from .. import _config
        from .._registry.push import Pusher

        async with Pusher(insecure=_config.insecure_registries()) as pusher:
            return await append_file_part(pusher, staged, base, lambda text: step(sink, text))

    digest, count = run_coroutine(push())
    step(sink, f"pushed {staged.uri} ({count} layer(s) appended, {time.monotonic() - started:.2f} s)")
    remember_pushed(staged, digest)
    _record(staged, how)
    return ImageBuild(staged.uri, built=True, digest=digest, dockerfile=staged.dockerfile, reason=how, path="append")


def _decide(full: BuildPlan, engine: BuildPlan, strict: bool, quiet: bool) -> tuple[Decision, Decision]:
    """The skip rule for the image and its engine part, asked of the registry at once."""
    from .._build import decide_all
    from .._skip import Question

    # A missing image is appended (or its engine part built): the precise reason would cost a round.
    questions = [Question(full.uri, full.platforms, True, hint=False), Question(engine.uri, engine.platforms, True)]
    image, part = decide_all(questions, None, strict, quiet)
    return image, part


def _fall_back(text: str, progress: Progress | None, quiet: bool, on_fallback: Callable[[str], None] | None) -> None:
    if on_fallback is not None:
        on_fallback(text)
    else:
        notice(text, progress, quiet)


def notice(text: str, progress: Progress | None, quiet: bool) -> None:
    """A line the user should see whatever view shows the build: a step of `progress` when
    there is one, else stderr unless quiet."""
    if progress is not None:
        step(progress, text)
    elif not quiet:
        print(text, file=sys.stderr)


@contextlib.contextmanager
def _sink(progress: Progress | None, quiet: bool, title: str) -> Iterator[Progress]:
    if progress is not None:
        yield progress
        return
    from .._progress import progress_sink

    with progress_sink(quiet, title=title) as sink:
        yield sink
