"""Build output, the same for every backend: redaction, BuildKit plain-progress parsing, events.

Each raw line is redacted first (nothing downstream ever sees a secret value), then parsed as
BuildKit plain progress: `#7 [3/5] RUN ...` starts a step (its title), `#7 0.422 text` is a line
step 7 printed, `#7 ERROR: ... exit code: 3` fails it, anything else is a status line of the
step. Each step's title and last lines are kept, so a failure becomes a `StepFailedError` that
says which step failed, with what exit code and output.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import deque
from dataclasses import dataclass, field

from flyte_images._errors import StepFailedError
from flyte_images.builders.base import Progress, ProgressEvent

REPLACEMENT = "***"
TAIL_LINES = 25
# Lines of a multi-line value shorter than this are not redacted on their own: a PEM key's
# blank or one-character lines would otherwise blank out common output.
_MIN_PART = 3

_PREFIXED = re.compile(r"^#(\d+) (.*)$")
_TIMED = re.compile(r"^\d+\.\d+ ?(.*)$")
_EXIT_CODE = re.compile(r"exit code: (\d+)")
_STATUS = re.compile(r"^(DONE|CACHED|CANCELED|ERROR)\b")
# A line where a tool says why it failed: `error:` (uv, cargo, compilers), `ERROR:` (pip), `E:`
# (apt), `fatal:` (git), uv's multiplication-sign bullet, a Python exception's last line.
_TOOL_ERROR = re.compile(
    r"^\s*(?:(?:error|Error|ERROR|E|fatal|FATAL)(?:\[[\w-]+\])?:|\u00d7|[A-Z]\w*(?:Error|Exception):)\s"
)
# What a tool prints under its error line: indented detail, uv's `cause:` and `hint:`.
_CONTINUATION = re.compile(r"^(?:\s|cause:|caused by:|hint:|help:|note:)", re.IGNORECASE)
_TOOL_LINES = 8


def redaction_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """The strings to hide for these secret values, longest first.

    Each whole value (any length), the value without surrounding white space (a file's
    trailing newline is rarely printed), each line of a multi-line value on its own
    (BuildKit prints output line by line, so a PEM key never arrives in one piece), and the
    base64 and hex forms of the value with and without its trailing newline (what `base64` or
    `xxd -p` of a secret prints; a debugging step does that more often than one thinks).
    """
    found: set[str] = set()
    for value in values:
        found.update(part for part in (value, value.strip(), value.rstrip()) if part)
        for form in {value, value.strip(), value.strip() + "\n"} - {""}:
            raw = form.encode()
            encoded = base64.b64encode(raw).decode()
            found.update((encoded, encoded.rstrip("="), raw.hex()))
        lines = value.splitlines()
        if len(lines) > 1:
            found.update(line.strip() for line in lines if len(line.strip()) >= _MIN_PART)
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


@dataclass(frozen=True)
class Redactor:
    """Replaces every secret value in a text with `***` in one pass (longest match wins)."""

    values: tuple[str, ...]
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        patterns = redaction_patterns(self.values)
        compiled = re.compile("|".join(map(re.escape, patterns))) if patterns else None
        object.__setattr__(self, "_pattern", compiled)

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REPLACEMENT, text) if self._pattern else text


class BuildOutput:
    """Turns one build's raw engine lines into redacted events and remembers them for errors."""

    def __init__(self, redact: tuple[str, ...], progress: Progress) -> None:
        self.redact = Redactor(tuple(redact))  # for exception text and stderr, as for every line
        self._progress = progress
        self._titles: dict[str, str] = {}
        self._tails: dict[str, deque[str]] = {}
        self._errors: dict[str, str] = {}
        self._failed: str | None = None
        self.exit_code: int | None = None  # of the failed command, when the engine said it
        self._last: str | None = None  # the step of the last prefixed line, for continuations
        self._lock = threading.Lock()  # engines may report from a reader thread

    def feed(self, raw: str) -> None:
        """One raw chunk of engine output (usually one line; several lines are split)."""
        # Redact the whole chunk before splitting, so a multi-line value printed in one chunk is
        # caught whole; values split over several chunks are caught by their lines' patterns.
        text = self.redact(raw.rstrip("\r\n"))
        with self._lock:
            for line in text.split("\n"):
                self._progress(self._parse(line.rstrip("\r")))

    def _parse(self, line: str) -> ProgressEvent:
        prefixed = _PREFIXED.match(line)
        if not prefixed:
            return self._unprefixed(line)
        number, rest = prefixed.groups()
        self._last = number
        timed = _TIMED.match(rest)
        if timed:
            text = timed.group(1)
            self._tails.setdefault(number, deque(maxlen=TAIL_LINES)).append(text)
            return ProgressEvent("log", self._titles.get(number, ""), text, line)
        if rest.startswith("ERROR"):
            self._failed = self._failed or number
            self._errors[number] = rest.removeprefix("ERROR").lstrip(": ")
            self._note_exit_code(rest)
        elif number not in self._titles or (rest.startswith("[") and not _STATUS.match(rest)):
            # The first line of a step is its title; BuildKit repeats the title when it
            # switches back to a step, which is not a new step.
            is_new = self._titles.get(number) != rest
            self._titles[number] = rest
            if is_new:
                return ProgressEvent("step", rest, rest, line)
        return ProgressEvent("log", self._titles.get(number, ""), rest, line)

    def _unprefixed(self, line: str) -> ProgressEvent:
        """A line without `#N`: a continuation of a multi-line error, or the final summary."""
        if self._last is not None and self._last in self._errors and line and not line.startswith("-"):
            self._errors[self._last] += "\n" + line
        elif not line.strip() or line.startswith("------"):
            self._last = None
        self._note_exit_code(line)
        return ProgressEvent("log", "", line, line)

    def _note_exit_code(self, text: str) -> None:
        code = _EXIT_CODE.search(text)
        if code:
            self.exit_code = int(code.group(1))

    @property
    def failed_step(self) -> str:
        """The title of the first step that reported ERROR, or ""."""
        return self._titles.get(self._failed or "", "")

    @property
    def failed_error(self) -> str:
        """What the engine said when that step failed (redacted), or ""."""
        return self._errors.get(self._failed or "", "")

    def tail(self, step: str | None = None) -> str:
        """The last lines a step printed (default: the failed step), redacted, one per line."""
        number = self._failed if step is None else next((n for n, t in self._titles.items() if t == step), None)
        return "\n".join(self._tails.get(number or "", ()))

    def step_failed(self, summary: str = "") -> StepFailedError:
        """A `StepFailedError` for the failed step: what the tool said first (the line a reader
        looks for), then the step's title, exit code and last lines."""
        step, tail, code = self.failed_step, self.tail(), self.exit_code
        where = f" at step {step}" if step else ""
        with_code = f" with exit code {code}" if code is not None else ""
        said = tool_message(tail)
        failed = f"build failed{where}{with_code}"
        before = tail.rstrip()[: -len(said)].rstrip() if said and tail.rstrip().endswith(said) else None
        if not said:
            detail = f":\n{tail}" if tail else (f": {self.redact(summary)}" if summary else "")
            message = f"{failed}{detail}"
        elif before is not None:  # the tool's message ends the output: not shown twice
            message = f"{said}\n{failed}" + (f"; before that it printed:\n{before}" if before else "")
        else:
            message = f"{said}\n{failed}; its last lines:\n{tail}"
        return StepFailedError(message, step=step, exit_code=code, tail=tail)


def tool_message(tail: str) -> str:
    """What the failing tool said about its failure, from a step's last lines: its last error
    line (pip's `ERROR: No matching distribution found for x`, apt's `E: Unable to locate
    package x`) with the detail lines under it, else the last line it printed; "" for none."""
    lines = [line.rstrip() for line in tail.splitlines()]
    marked = [i for i, line in enumerate(lines) if _TOOL_ERROR.match(line)]
    if not marked:
        return next((line.strip() for line in reversed(lines) if line.strip()), "")
    start = marked[-1]
    end = start + 1
    while end < len(lines) and end - start < _TOOL_LINES and _CONTINUATION.match(lines[end]):
        end += 1
    return "\n".join(lines[start:end]).strip()
