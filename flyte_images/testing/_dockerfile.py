"""The Dockerfile subset flyte-images renders, read as BuildKit reads it, for the fake backend:
instructions with `\\` continuations, words with quotes, escapes and `$VAR` / `${VAR}`
expansion, instruction flags, RUN's script, and the platform ARGs."""

from __future__ import annotations

import json
import platform as host
import re
from collections.abc import Mapping

PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDARCH")
_VAR = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction, with `\\` continuations joined and comments dropped
    (comments and blank lines, even inside a continuation)."""
    kept = "".join(f"{line}\n" for raw in text.splitlines() if (line := raw.strip()) and not line.startswith("#"))
    found: list[tuple[str, str]] = []
    for line in re.sub(r"[ \t]*\\\n", " ", kept).split("\n"):
        keyword, _, rest = line.strip().partition(" ")
        if keyword:
            found.append((keyword.upper(), rest.strip()))
    return found


def words(text: str, variables: Mapping[str, str], split: bool = True) -> list[str]:
    """BuildKit's word processing: quotes, backslash escapes, `$VAR` and `${VAR}` expansion."""
    found: list[str] = []
    current: list[str] = []
    started, i = False, 0
    while i < len(text):
        ch = text[i]
        if split and ch.isspace():
            if started:
                found.append("".join(current))
                current, started = [], False
            i += 1
            continue
        started = True
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
        elif ch == "'":
            end = text.find("'", i + 1)
            end = len(text) if end < 0 else end
            current.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i = _double_quoted(text, i + 1, variables, current)
        elif ch == "$" and (var := _VAR.match(text, i)):
            current.append(variables.get(var.group(1) or var.group(2), ""))
            i = var.end()
        else:
            current.append(ch)
            i += 1
    if started:
        found.append("".join(current))
    return found


def _double_quoted(text: str, i: int, variables: Mapping[str, str], out: list[str]) -> int:
    """Consume a double-quoted part starting after the quote; return the index after it."""
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '\\"$':
            out.append(text[i + 1])
            i += 2
        elif text[i] == "$" and (var := _VAR.match(text, i)):
            out.append(variables.get(var.group(1) or var.group(2), ""))
            i = var.end()
        else:
            out.append(text[i])
            i += 1
    return i + 1


def word(text: str, variables: Mapping[str, str]) -> str:
    """One word, its spaces kept (a WORKDIR, a value after the old `ENV K value` form)."""
    return "".join(words(text, variables, split=False))


def pairs(rest: str, variables: Mapping[str, str]) -> dict[str, str]:
    """ENV / LABEL: `K=V K2="v 2"`, or the old `K value with spaces`."""
    found = words(rest, variables)
    if found and "=" not in found[0]:
        key, _, value = rest.partition(" ")
        return {key: word(value.strip(), variables)}
    return dict(item.partition("=")[::2] for item in found)


def flags(rest: str) -> tuple[list[tuple[str, str]], str]:
    """Leading `--name=value` flags of an instruction, in order, and what follows them."""
    found: list[tuple[str, str]] = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        found.append((name, value))
        rest = rest.lstrip()
    return found, rest


def script(command: str) -> str:
    """The shell script of a RUN: exec form `["/bin/sh", "-c", SCRIPT]`, other exec forms, or plain."""
    if command.startswith("["):
        try:
            argv = json.loads(command)
        except json.JSONDecodeError:
            return command  # not JSON: BuildKit runs it as a shell command
        if len(argv) >= 3 and str(argv[0]).endswith("sh") and argv[1] == "-c":
            return str(argv[2])
        return " ".join(map(str, argv))
    return command


def host_platform() -> str:
    """This machine's platform as BuildKit names it, e.g. linux/amd64."""
    machine = host.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def platform_arg(name: str, plat: str) -> str:
    """The value of the platform ARG `name` in a build for `plat`."""
    os_name, _, rest = plat.partition("/")
    arch, _, variant = rest.partition("/")
    values = {"TARGETPLATFORM": plat, "TARGETOS": os_name, "TARGETARCH": arch, "TARGETVARIANT": variant}
    return values.get(name, host_platform() if name == "BUILDPLATFORM" else host_platform().split("/")[1])
