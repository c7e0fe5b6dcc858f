"""Build progress as people and CI logs want it.

One build (`progress_sink`): on a terminal a live view with the current step and its last lines
(rich); elsewhere (CI logs, pipes) every line on stderr as the engine printed it; quiet: nothing.
Several builds (`Board`, the CLI): a live table, or plain lines per step in the Dockerfile's
order with BuildKit's CACHED and times. Events arrive already redacted (builders.output.BuildOutput).
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
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


MODES = ("auto", "plain", "tty", "quiet")
# `[2/5] RUN ...`, `[stage-0 2/5] ...`, `[linux/arm64 2/5] ...`: where a step stands in its stage.
_PLACE = re.compile(r"^\[(?:(.*?) )?(\d+)/\d+\]")
_END = re.compile(r"^(?:CACHED$|DONE \d+(?:\.\d+)?s$|ERROR\b|CANCELED$)")
_OUTPUT = re.compile(r"^#\d+ \d+\.\d+ ")  # a line the step's own command printed
_BUSY = re.compile(r" \d+\.\d+s$")  # a status still counting (a pull's "1.1MB / 29MB 0.2s"), not "... done"


def resolve_mode(mode: str, out: TextIO) -> str:
    """The mode `mode` stands for: "auto" is tty when `out` is a terminal, else plain."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        return "tty" if out.isatty() else "plain"
    return mode


@dataclass
class _Step:
    title: str
    key: str | None  # the stage (and platform) of a Dockerfile step, None for BuildKit's own
    index: int
    end: str = ""  # CACHED, DONE 1.2s, ERROR ... or CANCELED, once it ended
    shown: bool = False

    @property
    def label(self) -> str:
        """How the step's end line names it: `[2/5]` for a Dockerfile step, else its title."""
        return self.title[: self.title.index("]") + 1] if self.key is not None else self.title


class _StepLines:
    """One image's steps as plain lines, in the Dockerfile's order, each with how it ended.

    BuildKit reports cached steps of one stage out of order ([4/5] before [3/5]); a step waits
    until the one before it in its stage was shown, or until it shows it runs. A step's title
    and its end (CACHED, DONE 1.2s) share one line when nothing came between them; a step whose
    command prints, or whose pull or push reports progress, gets its title line then, so a long
    step is visible while it runs. It also counts the Dockerfile steps and the cached ones for the summary."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._steps: dict[str, _Step] = {}
        self._waiting: list[_Step] = []
        self._shown: dict[tuple[str | None, int], _Step] = {}
        self._open: _Step | None = None  # shown, its title not yet written

    def event(self, event: ProgressEvent) -> None:
        if event.kind == "step":
            place = _PLACE.match(event.step)
            key, index = (place.group(1) or "", int(place.group(2))) if place else (None, 0)
            self._steps[event.step] = started = _Step(event.step, key, index)
            self._waiting.append(started)
            self._drain()
            return
        step = self._steps.get(event.step)
        if step is None or step.end:
            return
        if _END.match(event.text):
            step.end = event.text.split(":", 1)[0]
            if step.shown:
                self._ended(step)
            elif step.end != "CACHED":  # it ran: nothing it waited for will come first
                self._release(step)
            self._drain()
        elif _OUTPUT.match(event.line) or _BUSY.search(event.text):  # it runs: its title now, not at its end
            if not step.shown:
                self._release(step)
            if self._open is step:
                self._flush()
                self._drain()

    def close(self) -> None:
        """Show whatever still waits (a step whose predecessor BuildKit never named), in order."""
        for step in sorted(self._waiting, key=lambda s: (s.key or "", s.index)):
            self._show(step)
        self._waiting.clear()
        self._flush()

    def cached(self) -> tuple[int, int]:
        """(cached, all) Dockerfile steps that ended, FROM not counted (a base image is no layer
        cache hit)."""
        ran = [s for s in self._steps.values() if s.key is not None and s.end and not _is_from(s.title)]
        return sum(s.end == "CACHED" for s in ran), len(ran)

    def _ready(self, step: _Step) -> bool:
        """Whether the step before it was shown, and had its chance to end on its title's line."""
        if step.key is None or step.index <= 1:
            return True
        before = self._shown.get((step.key, step.index - 1))
        return before is not None and before is not self._open

    def _drain(self) -> None:
        progressed = True
        while progressed:
            ready = [s for s in self._waiting if self._ready(s)]
            progressed = bool(ready)
            for step in ready:
                self._waiting.remove(step)
                self._show(step)

    def _release(self, step: _Step) -> None:
        """Show `step` now, after the steps of its stage before it that still wait."""
        before = sorted(
            (s for s in self._waiting if s.key == step.key and s.index <= step.index), key=lambda s: s.index
        )
        for earlier in before:
            self._waiting.remove(earlier)
            self._show(earlier)

    def _show(self, step: _Step) -> None:
        self._flush()
        step.shown = True
        self._shown[(step.key, step.index)] = step
        self._open = step
        if step.end:
            self._ended(step)

    def _ended(self, step: _Step) -> None:
        if self._open is step:
            self._open = None
            self._write(f"{step.title}  {step.end}")
        else:
            self._flush()
            self._write(f"{step.label} {step.end}")

    def _flush(self) -> None:
        if self._open is not None:
            self._write(self._open.title)
            self._open = None


def _cached(row: _Row) -> str:
    hits, steps = row.steps.cached()
    return f"{hits} of {steps} steps cached" if steps else ""


def _is_from(title: str) -> bool:
    return title[title.index("]") + 1 :].lstrip().startswith("FROM ")


@dataclass
class _Row:
    state: str
    started: float
    steps: _StepLines
    took: float | None = None
    step: str = ""
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=3))


class Board:
    """Progress of several builds at once (`flyte-images build`): one row per image.

    `mode` "tty": a live table, each image's state, elapsed time, current step and, while it
    runs, its last log lines. "plain" (CI logs): each step on its own line prefixed with the
    image's name, in the Dockerfile's order, with BuildKit's CACHED or its time, so parallel
    builds stay readable and a cache hit is visible; then one summary line per image. "quiet":
    nothing. "auto": tty when `out` is a terminal, else plain.
    """

    def __init__(self, out: TextIO, mode: str = "auto") -> None:
        self._out = out
        self.mode = resolve_mode(mode, out)
        self._lock = threading.RLock()  # held by a sink while its step lines write
        self._rows: dict[str, _Row] = {}
        self._names: dict[str, _Row] = {}  # each name of a row's label
        self._live: Any = None

    def __enter__(self) -> Board:
        if self.mode == "tty":
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
        row = _Row("building", time.monotonic(), _StepLines(lambda line: self._plain(f"[{name}] {line}")))
        with self._lock:
            self._rows[name] = row
            self._names.update(dict.fromkeys(name.split(", "), row))
        self._plain(f"[{name}] building {uri}")
        self._refresh()

        def sink(event: ProgressEvent) -> None:
            with self._lock:
                row.steps.event(event)
                if event.kind == "step":
                    row.step = event.step
                    row.lines.clear()
                elif event.text.strip():
                    row.lines.append(event.text)
            self._refresh()

        return sink

    def finish(self, name: str, uri: str, state: str, took: float) -> None:
        with self._lock:
            row = self._rows.setdefault(name, _Row(state, time.monotonic(), _StepLines(lambda _line: None)))
            row.steps.close()
            row.state, row.took = state, took
        self._plain(f"[{name}] {state} in {took:.1f} s")
        self._refresh()

    def cached(self, name: str) -> str:
        """How many of its steps BuildKit took from its cache ("N of M steps cached") for an image
        (an environment's name) the engine built, else ""."""
        with self._lock:
            row = self._names.get(name)
            return _cached(row) if row is not None else ""

    def _plain(self, line: str) -> None:
        if self.mode != "plain":
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
