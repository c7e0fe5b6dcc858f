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

from .. import _config
from .._append.part import engine_layers, file_part_start, has_file_part
from .._errors import ConfigError
from .._image.image import Image
from .._interrupt import run_coroutine
from .._plan.plan import BuildPlan, staged_plan, subplan
from .decide import Decision, Question, ask_registry, decide_from, said
from .engine import build_by_engine
from .job import Job, Route
from .records import record, remember_pushed
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


class AppendRoute(Route):
    """The image as its engine part (built by the engine only when the registry lacks it) plus its
    file part, appended in the registry over one session."""

    def questions(self, planned: BuildPlan) -> tuple[Question, ...]:
        """The image and its engine part, asked in one round. A missing image is appended (or its
        engine part built): the precise reason would cost another round, so it is not asked."""
        engine = engine_subplan(planned)
        return (
            Question(planned.uri, planned.platforms, True, hint=False),
            Question(engine.uri, engine.platforms, True),
        )

    def run(self, job: Job) -> ImageBuild:
        if job.options.dry_run:
            return self._dry_run(job)
        return run_coroutine(self._run(job))

    def _dry_run(self, job: Job) -> ImageBuild:
        planned, force = job.planned, job.options.force
        asked = self.questions(planned)
        full, part = self.decided(job, asked)
        if not force and not full.build:
            return job.skipped(planned, full)
        where = self.routing(planned)
        built = f"after building it with the engine{' (' + where + ')' if where else ''}"
        how = "in the registry" if not part.build and not force else built
        layers = len(planned.image._layers) - file_part_start(planned.image)
        reason = f"dry run: would append {layers} file layer(s) to the engine part {asked[1].uri} ({how})"
        return ImageBuild(planned.uri, built=False, reason=reason, dockerfile=planned.dockerfile, path="append")

    async def _run(self, job: Job) -> ImageBuild:
        """The image and its engine part checked in one round; then, when the image is missing
        (or forced), its files staged, the engine part built when missing (or forced), and the
        file part appended to it."""
        import asyncio

        from .._append.push import step  # here: the engine route never makes layers
        from .._registry import Registry  # here: it loads httpx, which the engine route never needs

        planned, options = job.planned, job.options
        async with Registry(insecure=_config.insecure_registries()) as registry:
            full, part = await self._decided_in(registry, job, planned)
            if not options.force and not full.build:
                return job.skipped(planned, full)
            with staged_plan(self.image, self.render, uri=self.uri) as staged:
                if staged.uri != planned.uri:  # a file changed after it was read: ask about what was staged
                    full, part = await self._decided_in(registry, job, staged)
                    if not options.force and not full.build:
                        return job.skipped(staged, full)
                engine = engine_subplan(staged)
                asked = options.compression or _config.configured_compression()  # None: the engine part's
                if job.announce is not None:
                    job.announce(staged.uri)
                with job.sink(staged.uri) as sink:
                    digest = part.digest
                    if part.build or options.force:
                        why = "forced" if options.force else part.reason
                        step(sink, f"engine part {engine.uri}: {why}; building it with the engine")
                        backend = self.backend.get()
                        built = await asyncio.to_thread(build_by_engine, backend, engine, options, True, sink)
                        by = f"the engine ({self.backend.name}{f' on {built.where()}' if built.nodes else ''})"
                        record(engine, f"built by {by} as the engine part of {staged.uri}")
                        how = f"engine part {engine.uri} built by {by}, file part appended"
                        digest = None
                    else:
                        step(sink, f"engine part {engine.uri}: in the registry ({part.reason})")
                        how = f"file part appended to the engine part {engine.uri}, which was in the registry"
                    result = await append_to(registry, staged, engine, digest, sink, how, asked)
                record(staged, result.reason)
        return result

    async def _decided_in(self, registry: Registry, job: Job, planned: BuildPlan) -> tuple[Decision, Decision]:
        """The skip rule for the image and its engine part, asked at once over `registry`."""
        asked = self.questions(planned)
        missing = job.unknown(asked)
        answers = await ask_registry(registry, missing)
        fresh = said(decide_from(missing, answers, None, strict=job.options.strict), job.options.quiet)
        full, part = job.settled(asked, missing, fresh)
        return full, part


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
