"""Functions callable both ways, as in the Flyte SDK: `f(...)` blocks, `await f.aio(...)` does not."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class SyncAio(Generic[P, R]):
    def __init__(self, fn: Callable[P, R]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run in a worker thread so the event loop stays free while the build runs."""
        import asyncio  # not at import time: `import flyte_images` stays cheap

        return await asyncio.to_thread(self._fn, *args, **kwargs)


syncaio = SyncAio
