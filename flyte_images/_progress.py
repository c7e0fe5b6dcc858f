"""Build progress as people and CI logs want it.

On a terminal: a live view with the current step and its last lines (rich). Elsewhere (CI
logs, pipes): every line on stderr as the engine printed it. With quiet: nothing at all.
Events arrive already redacted (builders.output.BuildOutput).
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Iterator
from typing import TextIO

from flyte_images.builders.base import Progress, ProgressEvent

LIVE_LINES = 8


def _quiet(_event: ProgressEvent) -> None:
    return None


@contextlib.contextmanager
def progress_sink(quiet: bool = False, stream: TextIO | None = None, title: str = "") -> Iterator[Progress]:
    """A `Progress` for the duration of one build."""
    out = stream if stream is not None else sys.stderr
    if quiet:
        yield _quiet
    elif out.isatty():
        with _live(out, title) as sink:
            yield sink
    else:

        def plain(event: ProgressEvent) -> None:
            out.write(event.line + "\n")
            out.flush()

        yield plain


@contextlib.contextmanager
def _live(out: TextIO, title: str) -> Iterator[Progress]:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.text import Text

    console = Console(file=out, force_terminal=True)
    recent: deque[str] = deque(maxlen=LIVE_LINES)
    current = ["starting"]

    def view() -> Group:
        head = Spinner("dots", text=Text(f"{title} {current[0]}".strip(), style="bold"))
        lines = (Text("  " + line, style="dim", overflow="ellipsis", no_wrap=True) for line in recent)
        return Group(head, *lines)

    # transient: the view disappears when the build ends; the caller prints the outcome.
    with Live(view(), console=console, refresh_per_second=8, transient=True) as live:

        def sink(event: ProgressEvent) -> None:
            if event.kind == "step":
                current[0] = event.step
                recent.clear()
            elif event.text.strip() and (not event.step or event.step == current[0]):
                recent.append(event.text)
            live.update(view())

        yield sink
