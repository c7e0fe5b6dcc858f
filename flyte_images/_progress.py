"""Build progress as people and CI logs want it.

On a terminal: a live view with the current step and its last lines (rich). Elsewhere (CI
logs, pipes): plain lines on stderr, as BuildKit prints them. With quiet: nothing at all.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import TextIO

_STEP = re.compile(r"^#\d+ (\[.*)$")


@contextlib.contextmanager
def progress_sink(
    quiet: bool = False, stream: TextIO | None = None, title: str = ""
) -> Iterator[Callable[[str], None]]:
    out = stream if stream is not None else sys.stderr
    if quiet:
        yield lambda _line: None
    elif out.isatty():
        with _live(out, title) as sink:
            yield sink
    else:

        def plain(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        yield plain


@contextlib.contextmanager
def _live(out: TextIO, title: str) -> Iterator[Callable[[str], None]]:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.text import Text

    console = Console(file=out)
    recent: deque[str] = deque(maxlen=8)
    state = {"step": "starting"}

    def view() -> Group:
        head = Spinner("dots", text=Text(f"{title} {state['step']}".strip(), style="bold"))
        return Group(head, *(Text("  " + line, style="dim", overflow="ellipsis", no_wrap=True) for line in recent))

    with Live(view(), console=console, refresh_per_second=8, transient=True) as live:

        def sink(line: str) -> None:
            step = _STEP.match(line)
            if step:
                state["step"] = step.group(1)
            else:
                recent.append(line)
            live.update(view())

        yield sink
