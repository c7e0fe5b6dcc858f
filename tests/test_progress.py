"""The progress view: plain lines off a terminal, nothing when quiet, a live view on a terminal."""

from __future__ import annotations

import io

import pytest

from flyte_images._build.progress import progress_sink
from flyte_images.builders.base import ProgressEvent

EVENTS = [
    ProgressEvent("step", "[1/2] RUN make", "[1/2] RUN make", "#5 [1/2] RUN make"),
    ProgressEvent("log", "[1/2] RUN make", "compiling ***", "#5 0.120 compiling ***"),
    ProgressEvent("log", "", "", ""),
    ProgressEvent("log", "", "ERROR: failed to solve", "ERROR: failed to solve"),
]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_mode_writes_each_line_as_the_engine_printed_it() -> None:
    stream = io.StringIO()
    with progress_sink(stream=stream, title="img:1") as progress:
        for event in EVENTS:
            progress(event)
    assert stream.getvalue() == "#5 [1/2] RUN make\n#5 0.120 compiling ***\n\nERROR: failed to solve\n"


def test_plain_mode_goes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_sink() as progress:
        progress(EVENTS[1])
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "#5 0.120 compiling ***\n")


@pytest.mark.parametrize("stream", [io.StringIO(), FakeTerminal()], ids=["plain", "terminal"])
def test_quiet_writes_nothing(stream: io.StringIO) -> None:
    with progress_sink(quiet=True, stream=stream) as progress:
        for event in EVENTS:
            progress(event)
    assert stream.getvalue() == ""


def test_terminal_shows_the_current_step_and_its_lines_then_clears_the_view() -> None:
    stream = FakeTerminal()
    with progress_sink(stream=stream, title="img:1") as progress:
        progress(ProgressEvent("step", "[internal] load", "[internal] load", "#1 [internal] load"))
        progress(ProgressEvent("log", "[internal] load", "earlier step", "#1 0.1 earlier step"))
        for event in EVENTS[:2]:
            progress(event)
    shown = stream.getvalue()
    last_view = shown[shown.rindex("img:1") :]  # the final refresh before the view is removed
    assert "[1/2] RUN make" in last_view and "compiling ***" in last_view
    assert "earlier step" not in last_view  # a new step starts with its own lines
    assert shown.endswith("\x1b[2K")  # transient: the view is erased when the build ends
