"""What an interrupt stops: the build processes this program has running (buildx and the like)
and the event loops that talk to registries in build threads.

Ctrl-C or SIGTERM sent to this process's pid (a CI runner cancelling a job, `kill`) reaches only
this process, and Python delivers it to the main thread alone; a build thread blocked reading
its child's output or waiting on an upload cannot be interrupted itself. So whatever runs for a
build registers how to stop it here, and the thread that took the interrupt calls `stop_all`
before it waits for the others: the child ends its build (buildx cancels on SIGTERM) and the
event loop cancels its requests (their connections close), and the command ends at once.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_stoppers: dict[int, Callable[[], None]] = {}
_next_key = iter(range(1, 1 << 62))


@contextlib.contextmanager
def on_stop(stop: Callable[[], None]) -> Iterator[None]:
    """`stop` is called by `stop_all` while the block runs (from another thread)."""
    with _lock:
        key = next(_next_key)
        _stoppers[key] = stop
    try:
        yield
    finally:
        with _lock:
            _stoppers.pop(key, None)


def tracked(process: subprocess.Popen[str]) -> contextlib.AbstractContextManager[None]:
    """`process` is told to stop (SIGTERM) by `stop_all` while the block runs."""
    return on_stop(process.terminate)


def stop_all() -> None:
    """Stop everything registered: called once an interrupt has been taken."""
    with _lock:
        stoppers = list(_stoppers.values())
    for stop in stoppers:
        with contextlib.suppress(Exception):  # e.g. a process that has just ended
            stop()


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run that `stop_all` cancels; also from a thread that already runs an event loop
    (a notebook), where it runs in a thread of its own."""
    import asyncio  # here, not at import time: `import flyte_images` stays cheap

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_stoppable(coroutine))
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _stoppable(coroutine)).result()


async def _stoppable(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        loop.call_soon_threadsafe(task.cancel)

    with on_stop(cancel):
        return await coroutine
