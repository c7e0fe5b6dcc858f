""".dockerignore rules, read and matched the way Docker and BuildKit do.

Reading: a UTF-8 byte-order mark is dropped, `#` lines are comments, lines are stripped, a
leading `!` marks an exception (re-include), and the rest is cleaned like Go's `filepath.Clean`
without a leading `/`, so `/build`, `build/` and `./build` are one pattern. Matching: `*` is any
run of characters but `/`, `?` one such character, `[...]` a class, `\\` escapes, `**` any
number of path segments (also none). A path is excluded when the last pattern that matches it
or a parent folder is not an exception; the context's root never is. One `IgnoreRules` value
decides both what an identifier covers and what is staged, so tag and image share one file list.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .._errors import InvalidLayerArgument

# Applied before any user pattern, so a user's `!pattern` can bring a path back. They keep
# version-control data, virtual environments and caches out of images and out of tags: the
# original tool copied `.venv/` and `.git/` into images when no .dockerignore existed.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "**/__pycache__",
    "**/*.py[co]",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    "**/.DS_Store",
)

_EXACT, _PREFIX, _SUFFIX, _REGEX = range(4)
_ESCAPED = set(".+()|{}$\\")  # a backslash here is a lone one, at the end
_TOKENS = re.compile(r"\*\*/?|\\.?|.", re.DOTALL)
_WILDCARDS = {"*": "[^/]*", "?": "[^/]", "[": "[", "]": "]"}


def _clean(path: str) -> str:
    """Go's filepath.Clean for slash-separated paths ('' -> '.'), then without a leading '/'."""
    # posixpath keeps a leading '//' (POSIX allows it to be special); Go folds it to '/'.
    cleaned = posixpath.normpath(path).lstrip("/") if path else "."
    return cleaned or "/"


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern, compiled once to the cheapest test that is exact."""

    text: str
    exception: bool
    kind: int = field(init=False)
    regex: re.Pattern[str] | None = field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        kind, regex = _compile(self.text)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "regex", regex)

    def matches(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None

    def regex_source(self) -> str:
        """A regular expression that full-matches exactly the paths `matches` accepts."""
        if self.kind == _EXACT:
            return re.escape(self.text)
        if self.kind == _PREFIX:
            return re.escape(self.text[:-2]) + ".*"
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            alone = "|" + re.escape(suffix[1:]) if suffix.startswith("/") else ""
            return f"(?:.*{re.escape(suffix)}{alone})"
        assert self.regex is not None
        return f"(?:{self.regex.pattern[1:-1]})"

    def matches_or_parent(self, path: str) -> bool:
        parts = path.split("/")
        return any(self.matches("/".join(parts[:end])) for end in range(len(parts), 0, -1))


def _regex(source: str) -> re.Pattern[str]:
    """The translated pattern compiled. Brackets pass through as Docker passes them to Go's
    regexp, where a "[" inside a class is a literal, as it still is in Python; Python only warns
    that it may one day read "[[" as a nested set, which is no news to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(source, re.DOTALL)


def _compile(pattern: str) -> tuple[int, re.Pattern[str] | None]:
    """Translate like Docker's patternmatcher: same match type, same regular expression."""
    out = ["^"]
    kind = _EXACT
    tokens = _TOKENS.findall(pattern)
    for index, token in enumerate(tokens):
        last = index == len(tokens) - 1
        if token.startswith("**"):  # any number of path segments (`**/` at the end is `**`)
            if last and kind == _EXACT:
                kind = _PREFIX
            else:
                out.append(".*" if last else "(.*/)?")
                kind = _REGEX
            if index == 0:
                kind = _SUFFIX
        elif token in _WILDCARDS or len(token) == 2:  # a wildcard, a bracket, an escaped character
            out.append(_WILDCARDS.get(token, token))
            kind = _REGEX
        else:
            out.append("\\" + token if token in _ESCAPED else token)
    if kind != _REGEX:
        return kind, None
    try:
        return kind, _regex("".join(out) + "$")
    except re.error as exc:
        raise InvalidLayerArgument("dockerignore", f"invalid pattern {pattern!r}: {exc}") from exc


def parse_dockerignore(text: str) -> tuple[str, ...]:
    """Return the patterns of a .dockerignore text, cleaned, `!` kept as a prefix."""
    patterns: list[str] = []
    for raw in text.removeprefix("\ufeff").splitlines():
        line = raw.strip()
        if raw.startswith("#") or not line:
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        if not line:
            raise InvalidLayerArgument("dockerignore", 'illegal exception pattern "!"')
        patterns.append(("!" if exception else "") + _clean(line))
    return tuple(patterns)


@dataclass(frozen=True)
class IgnoreRules:
    """An ordered list of patterns; the last one that matches a path decides."""

    patterns: tuple[Pattern, ...]
    _checkers: dict[tuple[bool, ...], Callable[[str], bool]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> IgnoreRules:
        return cls(tuple(Pattern(_clean(line.removeprefix("!")), line.startswith("!")) for line in lines))

    @property
    def has_exceptions(self) -> bool:
        return any(p.exception for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, '/'-separated) is excluded, parents taken into account."""
        return path not in ("", ".") and self.excluded_with(self.state_for_dir(None, path), path)

    def state_for_dir(self, parent: tuple[bool, ...] | None, path: str) -> tuple[bool, ...]:
        """Per pattern, whether it matches `path` or a parent: what the walk carries downward."""
        if parent is None:
            if path in ("", "."):
                return (False,) * len(self.patterns)
            return tuple(p.matches_or_parent(path) for p in self.patterns)
        return tuple(was or p.matches(path) for was, p in zip(parent, self.patterns, strict=True))

    def checker(self, parent: tuple[bool, ...]) -> Callable[[str], bool]:
        """`excluded_with(parent, path)` as a function of `path`, built once per parent state.

        Without exception patterns a path is excluded exactly when some pattern matches it or a
        parent; the walk only enters folders no pattern matched, so one combined regular
        expression answers for every entry of such a folder.
        """
        found = self._checkers.get(parent)
        if found is None:
            if self.has_exceptions:
                found = partial(self.excluded_with, parent)
            elif any(parent) or not self.patterns:
                verdict = any(parent)
                found = lambda _path: verdict  # noqa: E731
            else:
                combined = "|".join(p.regex_source() for p in self.patterns)
                fullmatch = _regex(combined).fullmatch
                found = lambda path: fullmatch(path) is not None  # noqa: E731
            self._checkers[parent] = found
        return found

    def excluded_with(self, parent: tuple[bool, ...], path: str) -> bool:
        """`excluded(path)`, reusing the per-pattern results of the parent folder."""
        matched = False
        for was, pattern in zip(parent, self.patterns, strict=True):
            if pattern.exception != matched:
                continue
            if was or pattern.matches(path):
                matched = not pattern.exception
        return matched


def read_dockerignore(path: Path) -> tuple[str, ...]:
    """Patterns of the .dockerignore file at `path` (which must exist)."""
    return parse_dockerignore(path.read_text(encoding="utf-8", errors="surrogateescape"))
