"""Build progress as people and CI logs want it.

On a terminal: a live view with the current step and its last lines (rich). Elsewhere (CI
logs, pipes): every line on stderr as the engine printed it. With quiet: nothing at all.
Events arrive already redacted (builders.output.BuildOutput).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

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


@dataclass
class _Row:
    state: str
    started: float
    took: float | None = None
    step: str = ""
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=3))


class Board:
    """Progress of several builds at once (`flyte-images build`): one row per image.

    On a terminal a live table: each image's state, elapsed time, current step and, while it
    runs, its last log lines. Elsewhere one plain line per step as it starts, prefixed with the
    image's name, so parallel builds stay readable in CI logs. Quiet: nothing.
    """

    def __init__(self, out: TextIO, quiet: bool) -> None:
        self._out = out
        self._quiet = quiet
        self._live_view = not quiet and out.isatty()
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._live: Any = None

    def __enter__(self) -> Board:
        if self._live_view:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self._out, force_terminal=True), refresh_per_second=4)
            self._live.__enter__()
            self._refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._refresh()
            self._live.__exit__(None, None, None)

    def start(self, name: str, uri: str) -> Progress:
        """Mark `name` as building `uri`; the Progress its build reports to."""
        row = _Row("building", time.monotonic())
        with self._lock:
            self._rows[name] = row
        self._plain(f"[{name}] building {uri}")
        self._refresh()

        def sink(event: ProgressEvent) -> None:
            if event.kind == "step":
                row.step = event.step
                row.lines.clear()
                self._plain(f"[{name}] {event.step}")
            elif event.text.strip():
                row.lines.append(event.text)
            self._refresh()

        return sink

    def finish(self, name: str, uri: str, state: str, took: float) -> None:
        with self._lock:
            row = self._rows.setdefault(name, _Row(state, time.monotonic()))
            row.state, row.took = state, took
        self._plain(f"[{name}] {state} in {took:.1f} s")
        self._refresh()

    def _plain(self, line: str) -> None:
        if self._quiet or self._live_view:
            return
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def _refresh(self) -> None:
        if self._live is not None:
            with self._lock:
                self._live.update(self._view())

    def _view(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        now = time.monotonic()
        for name, row in self._rows.items():
            took = row.took if row.took is not None else now - row.started
            style = {"built": "green", "appended": "green", "exists": "green", "failed": "red"}.get(row.state, "yellow")
            step = Text(row.step, overflow="ellipsis", no_wrap=True)
            table.add_row(Text(row.state, style=style), Text(name, style="bold"), f"{took:5.1f}s", step)
            if row.state == "building":
                for line in row.lines:
                    table.add_row("", "", "", Text("  " + line, style="dim", overflow="ellipsis", no_wrap=True))
        return table
