"""The engine route (a backend builds the staged plan) and the builder-object route (a Flyte SDK
image builder object builds the whole Image), each one descent: decide -> stage -> execute ->
record."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Awaitable
from typing import TypeVar

from .._errors import BuildError, FlyteImagesError
from .._interrupt import run_coroutine
from .._plan.plan import staged_plan
from .engine import build_by_engine
from .job import Job, Route
from .options import BuildOptions
from .records import record
from .result import ImageBuild

T = TypeVar("T")


class EngineRoute(Route):
    """The whole image built by the engine backend from its staged files."""

    def run(self, job: Job) -> ImageBuild:
        planned, options = job.planned, job.options
        if not options.force:
            decision = self.decided(job, self.questions(planned))[0]
            if not decision.build:
                return job.skipped(planned, decision)
        if options.dry_run:
            where = self.routing(planned)
            reason = f"dry run: would build ({where})" if where else "dry run: would build"
            return ImageBuild(planned.uri, built=False, reason=reason, dockerfile=planned.dockerfile)
        with staged_plan(self.image, self.render, uri=self.uri) as staged:
            if staged.uri != planned.uri and not options.force:
                # A file changed after it was read: what is built is what was staged, so ask again.
                decision = self.decided(job, self.questions(staged))[0]
                if not decision.build:
                    return job.skipped(staged, decision)
            result = build_by_engine(self.backend.get(), staged, options, self.pushing, job.progress, job.announce)
            where = f" on {result.where()}" if result.nodes else ""
            record(staged, f"built by the engine ({self.backend.name}{where}): {self.why}")
            return result


class ObjectRoute(Route):
    """The image handed whole to a Flyte SDK image builder object, as `backends.WholeImageBuilder`
    describes: our skip rule first, then the object's `build_image`; what it raises that is not
    one of our errors becomes a BuildError naming it, as the SDK wraps a third-party builder's
    errors."""

    stages = False

    def run(self, job: Job) -> ImageBuild:
        planned, options = job.planned, job.options
        if not options.force:
            decision = self.decided(job, self.questions(planned))[0]
            if not decision.build:
                return ImageBuild(
                    planned.uri,
                    built=False,
                    reason=decision.reason,
                    digest=decision.digest,
                    dockerfile=planned.dockerfile,
                )
        target = self.backend.get().target  # type: ignore[attr-defined]
        name = type(target).__name__
        ignored = _not_passed(options)
        if ignored:
            warnings.warn(
                f"the image builder {name} is handed the Image as the Flyte SDK hands it: {', '.join(ignored)} "
                "cannot be passed to it and are not applied (build with builder='docker' or 'buildkit' to use them)",
                UserWarning,
                stacklevel=2,
            )
        try:
            result = target.build_image(self.image, dry_run=options.dry_run, wait=True, force=options.force)
            if inspect.isawaitable(result):
                result = run_coroutine(_awaited(result))
        except FlyteImagesError:
            raise
        except Exception as exc:
            raise BuildError(f"the image builder {name} failed to build {planned.uri}: {exc}") from exc
        uri = getattr(result, "uri", result if isinstance(result, str) else None)
        how = f"dry run by the image builder {name}" if options.dry_run else f"built by the image builder {name}"
        if not options.dry_run:
            record(planned, how)
        return ImageBuild(
            uri if isinstance(uri, str) else None,
            getattr(result, "remote_run", None),
            getattr(result, "build_run", None),
            built=not options.dry_run,
            reason=how,
            dockerfile=planned.dockerfile,
            path="" if options.dry_run else "builder",
        )


def _not_passed(options: BuildOptions) -> list[str]:
    """The options a Flyte SDK image builder's `build_image(image, dry_run, wait, force)` has no
    place for."""
    given = {
        "no_cache": options.no_cache,
        "compression": options.compression,
        "cache_from": options.cache_from,
        "cache_to": options.cache_to,
        "cache": options.cache == "registry",
        "ca_bundle": options.ca_bundle,
    }
    return [name for name, value in given.items() if value]


async def _awaited(result: Awaitable[T]) -> T:
    return await result
