"""What every route shares: the `Route` a build takes, the `Job` it runs, and the skip rule's
answers taken once per question.

A route is known before any file is read (`route.route_of`); it then runs one `Job` (a plan
that staged nothing, the options, the caller's hooks) as one descent: decide -> stage ->
execute -> record. The peers are `engine_route.EngineRoute`, `append.AppendRoute` and
`engine_route.ObjectRoute` (a Flyte SDK image builder object).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from flyte_images.builders.base import routing_of

from .._errors import RegistryError
from .._formats.dockerfile import RenderOptions
from .._image.image import Image
from .._plan.plan import BuildPlan
from . import progress as progress_view
from .backends import get_builder
from .decide import Decision, Question, decide_all
from .options import BuildOptions
from .records import record
from .result import ImageBuild, placement

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder, Progress


@dataclass(frozen=True)
class Job:
    """One build on its route: the plan of the route's image (nothing staged), the options,
    `announce(uri)` called when a build really starts, where progress goes (None: this process's
    own progress view) and the decisions already taken, by uri (a deploy asks about every image
    at once)."""

    planned: BuildPlan
    options: BuildOptions
    announce: Callable[[str], None] | None = None
    progress: Progress | None = None
    known: Mapping[str, Decision] = field(default_factory=dict)

    def skipped(self, planned: BuildPlan, decision: Decision) -> ImageBuild:
        """The result of an image that exists: recorded for `explain` (not in a dry run)."""
        if not self.options.dry_run:
            record(planned)
        return ImageBuild(
            planned.uri, built=False, reason=decision.reason, digest=decision.digest, dockerfile=planned.dockerfile
        )

    def unknown(self, asked: tuple[Question, ...]) -> list[Question]:
        """The questions whose answer is not known yet."""
        return [q for q in asked if q.uri not in self.known]

    def settled(self, asked: tuple[Question, ...], missing: list[Question], fresh: list[Decision]) -> list[Decision]:
        """The answer to each of `asked`: `fresh` for `missing` (asked just now), the known one
        for the others. A failure (the registry cannot be asked, strict) raises."""
        answers = {q.uri: d for q, d in zip(missing, fresh, strict=True)}
        found = [answers[q.uri] if q.uri in answers else self.known[q.uri] for q in asked]
        for decision in found:
            if decision.failure:
                raise RegistryError(decision.failure)
        return found

    @contextlib.contextmanager
    def sink(self, title: str) -> Iterator[Progress]:
        if self.progress is not None:
            yield self.progress
            return
        with progress_view.progress_sink(self.options.quiet, title=title) as sink:
            yield sink


class Backend:
    """The engine backend, looked up when first needed: a build on the append route whose engine
    part is in the registry never needs one."""

    def __init__(self, chosen: object) -> None:
        self.chosen = chosen
        self._backend: Builder | None = None

    def get(self) -> Builder:
        if self._backend is None:
            self._backend = get_builder(self.chosen)
        return self._backend

    @property
    def name(self) -> str:
        return str(getattr(self.get(), "name", "a backend"))


@dataclass(frozen=True)
class Route:
    """What is known of a build before its files are read: the image as built (platforms
    overridden), whether it is pushed, the backend asked for, how it renders, the uri a caller
    owns (None: repository:identifier) and why this route was taken."""

    image: Image
    pushing: bool
    backend: Backend
    render: RenderOptions
    uri: str | None
    why: str
    # False where the image is handed whole to someone else's builder: its layers' checks
    # (a uv.lock in step with its project, usable secrets) are then not ours to run.
    stages: ClassVar[bool] = True

    def questions(self, planned: BuildPlan) -> tuple[Question, ...]:
        """What the skip rule asks about `planned` on this route (one round of requests)."""
        return (Question(planned.uri, planned.platforms, self.pushing),)

    def run(self, job: Job) -> ImageBuild:
        raise NotImplementedError

    def routing(self, planned: BuildPlan) -> str:
        """Where the backend would build each platform of `planned`, for a dry run (`linux/amd64
        on tcp://bk-1:1234`); empty when the backend does not choose a daemon."""
        return placement(routing_of(self.backend.get(), planned.uri, planned.platforms, self.pushing))

    def decided(self, job: Job, asked: tuple[Question, ...]) -> list[Decision]:
        """The skip rule's answer to each question, from `job.known` where it has one, the others
        asked at once; a failure (the registry cannot be asked, strict) raises."""
        missing = job.unknown(asked)
        backend = self.backend.get() if any(not q.pushing for q in missing) else None
        return job.settled(asked, missing, decide_all(missing, backend, job.options.strict, job.options.quiet))
