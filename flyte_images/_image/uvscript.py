"""The inline metadata block of a uv script (PEP 723): `# /// script` ... `# ///`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .._config import _tomllib
from .._errors import SourceError

_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


@dataclass(frozen=True)
class ScriptMetadata:
    requires_python: str | None
    dependencies: tuple[str, ...]


def parse_script_metadata(text: str, origin: str = "script") -> ScriptMetadata:
    """Parse the `script` block; raise SourceError naming `origin` when it is absent or invalid."""
    blocks = [m for m in _BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        raise SourceError(
            f"{origin} has no '# /// script' block; add one, e.g.\n"
            '# /// script\n# requires-python = ">=3.12"\n# dependencies = ["httpx"]\n# ///'
        )
    if len(blocks) > 1:
        raise SourceError(f"{origin} has more than one '# /// script' block; keep one")
    data = block_toml(blocks[0].group("content"), origin)
    deps = data.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise SourceError(f"'dependencies' in {origin} must be a list of strings")
    requires = data.get("requires-python")
    if requires is not None and not isinstance(requires, str):
        raise SourceError(f"'requires-python' in {origin} must be a string like '>=3.12'")
    return ScriptMetadata(requires, tuple(deps))


def block_toml(content: str, origin: str) -> dict[str, Any]:
    """The TOML of a `# /// script` block, its lines' leading `# ` (or `#`) taken off."""
    text = "".join(line[2:] if line.startswith("# ") else line[1:] for line in content.splitlines(keepends=True))
    tomllib = _tomllib()
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"the '# /// script' block of {origin} is not valid TOML: {exc}") from exc
    return data
