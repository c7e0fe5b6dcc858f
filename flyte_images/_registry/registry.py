"""`Registry`: the one way to OCI distribution registries. It checks images (checks.py), reads
their parts and writes new ones (uploads.py) and writes multi-platform indexes, all over one
session (session.py): a build's checks and push share connections, credentials and tokens. A
check answers "unknown" with a reason, any other operation raises a RegistryError. Plain HTTP
only for hosts configured insecure and loopback hosts (as Docker does); HTTPS everywhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .checks import Checks, Existence
from .transport import HTTPTransport


class Registry(Checks):
    """Checks, reads and writes, sharing connections, credentials and tokens; `async with` it.
    The options are `Session`'s."""


async def check_many(
    references: Sequence[str],
    platforms: Sequence[str] | None = None,
    *,
    insecure: Iterable[str] = (),
    concurrency: int = 16,
    transport: HTTPTransport | None = None,
    deadline: float | None = None,
    **options: Any,
) -> list[Existence]:
    """Check every reference concurrently; results in the same order, one per reference."""
    async with Registry(
        insecure=insecure, concurrency=concurrency, transport=transport, deadline=deadline, **options
    ) as registry:
        return list(await asyncio.gather(*(registry.check(r, platforms) for r in references)))


async def push_index(
    reference: str,
    parts: Mapping[str, str],
    *,
    insecure: Sequence[str] = (),
    transport: HTTPTransport | None = None,
    deadline: float | None = None,
) -> str:
    """PUT an OCI image index under `reference` listing one pushed image per platform.

    `parts` maps each platform ("linux/arm64") to the reference its image was pushed as (a tag
    or digest in the same repository). Credentials are found exactly as for the existence
    checks. Returns the index's digest; raises RegistryError saying what is wrong otherwise.
    """
    async with Registry(insecure=insecure, transport=transport, deadline=deadline) as registry:
        return await registry.push_index(reference, parts)
