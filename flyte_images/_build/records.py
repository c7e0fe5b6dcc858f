"""What a build leaves for later: the push record (trusted by the skip rule for a while, see
`decide`) and the breakdown `flyte-images explain` compares with."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from .._errors import FlyteImagesError
from .._plan.explain import breakdown, save_record
from .._plan.plan import BuildPlan, description_key


def remember_pushed(staged: BuildPlan, digest: str | None) -> None:
    """Note a push, so the next existence check trusts it for a while. (The registry package is
    imported here: it loads httpx, which a build loaded into the local engine never needs.)"""
    from .._registry.record import PlatformCache, remember_push

    remember_push(staged.uri, digest, staged.platforms)
    if digest and len(staged.platforms) == 1:  # a single-platform push is a plain manifest
        known = PlatformCache.default()
        known.put(digest, staged.platforms)
        known.save()


def record(planned: BuildPlan, how: str = "") -> None:
    """Keep what this build was made of, for `flyte-images explain` (best effort)."""
    with contextlib.suppress(OSError, FlyteImagesError):
        save_record(description_key(planned.image), replace(breakdown(planned), how=how))
