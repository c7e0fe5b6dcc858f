"""Whether an image must be built: one rule, used by every route, `build_images()` and the CLI.

For an image that is pushed (it has a registry):
- the registry has the tag with every requested platform: skip it;
- the registry has no such tag, but this machine pushed exactly this uri with these
  platforms less than `_registry.record.RECENT` seconds ago: skip it. Registries behind
  caches or eventually consistent storage (S3-backed ones, some mirrors) can answer 404 for a
  short while after a successful push; without this window a deploy right after a build would
  rebuild the image it just pushed. The window is the only place where a "missing" answer is
  overruled, and only by our own record of a completed push;
- the registry cannot be asked ("unknown": unreachable, 5xx, no credentials, a malformed
  answer): never taken as "exists". The image fails with the reason before anything is built
  (its push would fail after the build); with `require_check=False` it is built, with a warning.
For an image that is loaded into the local engine: the backend is asked whether its own store
has the uri; yes skips, no or "cannot tell" builds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _config
from .._errors import RegistryError
from .._interrupt import run_coroutine

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder

    from .._registry import Registry


@dataclass(frozen=True)
class Question:
    uri: str
    platforms: tuple[str, ...]
    pushing: bool
    hint: bool = True  # a missing image's reason may cost another request to be more precise


@dataclass(frozen=True)
class Decision:
    build: bool
    reason: str
    digest: str | None = None
    failure: str | None = None  # set when the image must fail instead (strict, registry unknown)
    warning: str | None = None  # building without knowing: say so


def decide(questions: Sequence[Question], backend: Builder | None, *, strict: bool) -> list[Decision]:
    """One decision per question, in order; registries are asked concurrently. `backend` answers
    for images loaded into the local engine (not needed when every image is pushed)."""
    remote = [q for q in questions if q.pushing]
    return decide_from(questions, _ask_registries(remote) if remote else [], backend, strict=strict)


def decide_from(
    questions: Sequence[Question], answers: Sequence[object], backend: Builder | None, *, strict: bool
) -> list[Decision]:
    """`decide` with the registries' answers to the pushed questions already asked (in order)."""
    remote = [q for q in questions if q.pushing]
    by_question = dict(zip((id(q) for q in remote), answers, strict=True))
    decisions = []
    for question in questions:
        if question.pushing:
            decisions.append(_remote(question, by_question[id(question)], strict))
        else:
            if backend is None:
                raise ValueError(f"{question.uri} is loaded locally: decide() needs the backend to ask")
            found = backend.local_exists(question.uri)
            decisions.append(
                Decision(False, "already in the local engine") if found else Decision(True, "not in the local engine")
            )
    return decisions


def _ask_registries(questions: list[Question]) -> list[object]:
    from .._registry import Registry

    async def ask() -> list[object]:
        async with Registry(insecure=_config.insecure_registries()) as registry:
            return await ask_registry(registry, questions)

    return run_coroutine(ask())


async def ask_registry(registry: Registry, questions: Sequence[Question]) -> list[object]:
    """The registry's answers to pushed `questions`, asked at once over `registry`'s session."""
    import asyncio

    return list(await asyncio.gather(*(registry.check(q.uri, q.platforms, hint=q.hint) for q in questions)))


def _remote(question: Question, answer: object, strict: bool) -> Decision:
    from .._registry import Existence
    from .._registry.record import recent_push

    assert isinstance(answer, Existence)
    if answer.exists:
        return Decision(False, f"already in the registry with {', '.join(answer.platforms)}", answer.digest)
    if answer.state == "missing":
        # Only "no such tag" can be registry lag; a manifest that is there but lacks a platform
        # (answer.digest is set) is a real answer and is never overruled.
        pushed = recent_push(question.uri, question.platforms) if answer.digest is None else None
        if pushed is not None:
            age = int(time.time() - float(str(pushed["time"])))
            digest = pushed.get("digest")
            return Decision(
                False,
                f"pushed from this machine {age} s ago (the registry has not caught up)",
                digest if isinstance(digest, str) else None,
            )
        return Decision(True, f"missing: {answer.reason}" if answer.reason else "not in the registry")
    why = f"cannot tell whether {question.uri} is already built: {answer.reason}"
    if strict:
        return Decision(
            True,
            why,
            failure=f"{why}; fix that, or pass require_check=False (CLI: --no-require-check) to build without knowing",
        )
    return Decision(True, f"building: {why}", warning=f"warning: {why}; building it")


def decide_all(questions: list[Question], backend: Builder | None, strict: bool, quiet: bool) -> list[Decision]:
    """The skip rule for each question, asked at once; a failure raises, warnings go to stderr."""
    return said(decide(questions, backend, strict=strict), quiet)


def said(decisions: list[Decision], quiet: bool) -> list[Decision]:
    """`decisions`, once a failure among them has raised and their warnings gone to stderr."""
    for decision in decisions:
        if decision.failure:
            raise RegistryError(decision.failure)
        if decision.warning and not quiet:
            print(decision.warning, file=sys.stderr)
    return decisions
