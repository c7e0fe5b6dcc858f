"""Quoting of user values into Dockerfile instructions and the shell scripts RUN executes.

Every instruction we render is one physical line, except continuation lines we write ourselves
between mount flags, so no value can start another instruction. The rules, checked against
BuildKit on a real engine (tests/test_engine_context.py):

- ENV values and WORKDIR are written in double quotes, where BuildKit's word processing takes
  `\\\\`, `\\"` and `\\$` as escapes and leaves any other backslash as is. Escaping exactly those
  three characters makes the value literal: no `$VAR` expansion, no quote removal.
- COPY arguments use the JSON form; BuildKit then processes each element as a shell word
  outside quotes, where a backslash escapes any character, so `\\`, `$`, `"` and `'` get one.
- RUN steps that carry user text use the exec form `["/bin/sh", "-c", SCRIPT]`: JSON carries
  newlines and quotes exactly and Docker does no expansion in it. Inside SCRIPT, arguments are
  quoted with `shell_word` (single quotes, nothing expands) or `shell_expanding` (double
  quotes where only `$NAME` and `${NAME}` expand, so a package URL can use a secret exposed as
  an environment variable, as the SDK documents; `$(...)`, backticks and `\\` stay literal).
JSON is written ASCII-only, so no Unicode line separator can end a line early.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable

# Split by it, a value gives its literal parts at even positions and its references at odd ones.
_VAR_REF = re.compile(r"(\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\}))")


def dockerfile_dq(value: str) -> str:
    """A double-quoted ENV/WORKDIR value that BuildKit reads back literally."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def json_words(values: Iterable[str]) -> str:
    """The JSON form of COPY arguments, each escaped for BuildKit's word processing."""
    return json.dumps([re.sub(r"([\\$\"'])", r"\\\1", v) for v in values], ensure_ascii=True)


def exec_form(script: str) -> str:
    """`["/bin/sh", "-c", SCRIPT]`, exactly."""
    return json.dumps(["/bin/sh", "-c", script], ensure_ascii=True)


def shell_word(value: str) -> str:
    """A POSIX shell word that expands to `value` and nothing else."""
    return shlex.quote(value)


def shell_expanding(value: str) -> str:
    """A double-quoted shell word in which only `$NAME` / `${NAME}` references expand."""
    parts = _VAR_REF.split(value)
    return '"' + "".join(p if i % 2 else re.sub(r'([\\$`"])', r"\\\1", p) for i, p in enumerate(parts)) + '"'


def shell_join(words: Iterable[str]) -> str:
    return " ".join(words)
