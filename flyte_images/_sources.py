"""Which local files a layer reads, decided once for the identifier and the build context.

Rules for a copied folder (a source folder, an installed uv or poetry project, a Dockerfile's
context) are, in order, later ones winning:

1. the default excludes (`.git`, `.venv`, `__pycache__`, ... see `_ignore.DEFAULT_EXCLUDES`),
   except for a Dockerfile's context, which Docker itself sends without them;
2. the patterns of the image's `with_dockerignore(path)` file, matched against paths relative
   to the folder holding that file (as Docker matches a context's .dockerignore), or, when the
   copied folder is not inside that folder, relative to the copied folder;
3. with no `with_dockerignore`, a `.dockerignore` at the root of the copied folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ._errors import SourceError, SourceNotFoundError
from ._files import Entry, Tree, collect_tree, file_entry
from ._ignore import IgnoreRules, read_dockerignore
from ._statcache import StatCache


@dataclass(frozen=True)
class SourceContext:
    """What decides a layer's file list besides the layer itself."""

    dockerignore: Path | None = None
    cache: StatCache | None = None


def tree_rules(folder: Path, ctx: SourceContext, *, defaults: bool = True) -> tuple[IgnoreRules, str]:
    """The ignore rules for `folder` and the prefix its paths are matched with."""
    if ctx.dockerignore is not None:
        if not ctx.dockerignore.is_file():
            raise SourceNotFoundError(
                f".dockerignore file {ctx.dockerignore} (given to with_dockerignore) does not exist"
            )
        patterns = read_dockerignore(ctx.dockerignore)
        base = ctx.dockerignore.parent
        try:
            rel = folder.relative_to(base).as_posix()
        except ValueError:
            rel = "."
        prefix = "" if rel == "." else rel + "/"
        return IgnoreRules.for_tree(patterns, defaults=defaults), prefix
    local = folder / ".dockerignore"
    patterns = read_dockerignore(local) if local.is_file() else ()
    return IgnoreRules.for_tree(patterns, defaults=defaults), ""


def folder_entries(folder: Path, ctx: SourceContext, *, defaults: bool = True) -> Tree:
    rules, prefix = tree_rules(folder, ctx, defaults=defaults)
    return collect_tree(folder, rules, ctx.cache, prefix)


def single_file(path: Path, ctx: SourceContext, what: str) -> Entry:
    """The entry of one file a layer reads; `what` says which parameter named it."""
    if not path.exists():
        raise SourceNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise SourceError(f"{what} {path} is a folder, a file is expected")
    return file_entry(path, ctx.cache)


_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)")


def requirement_files(path: Path) -> list[Path]:
    """The requirements file and every file it includes with -r/-c, transitively, in order."""
    seen: list[Path] = []
    pending = [path]
    while pending:
        current = pending.pop(0)
        if current in seen:
            continue
        if not current.is_file():
            what = "requirements file" if current == path else f"file included by {path.name}"
            raise SourceNotFoundError(f"{what} {current} does not exist")
        seen.append(current)
        for line in current.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _INCLUDE.match(line)
            if match:
                pending.append(Path(os.path.normpath(current.parent / match.group(1))))
    return seen


def relative_to_first(paths: list[Path]) -> list[str]:
    """Paths of included files relative to the first one's folder, '/'-separated."""
    base = paths[0].parent
    return [Path(os.path.relpath(p, base)).as_posix() for p in paths]
