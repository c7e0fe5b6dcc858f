"""Why an image has the tag it has, and what changed since it was last built.

`breakdown(plan)` splits the identifier into its parts (the base, the target Python and
platforms, then each layer) with the SHA-256 of each part's canonical encoding and, for parts
that read files, every file's mode and SHA-256. Each `build` stores the breakdown of the image
it built (or found) under the user cache folder, one record per repository. `explain` compares
the current breakdown with that record, part by part: which layers changed, and within them
which files were added, removed or changed (with their digests) and which arguments changed.
Only the parts that changed differ: a layer's part covers that layer alone (Docker will still
rerun the steps after a changed one, since each builds on the one before).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files.statcache import append_cache_lines, cache_dir, cache_lines
from .plan import BuildPlan

Files = dict[str, tuple[int, str]]


@dataclass
class Part:
    name: str  # "base", "target", or "<n> <kind>"
    summary: str
    digest: str
    files: Files = field(default_factory=dict)


@dataclass
class Breakdown:
    uri: str
    identifier: str
    parts: list[Part]
    time: float = field(default_factory=time.time)
    how: str = ""  # how the build made it: the path taken and why (empty: found, or not said)

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every file entry, which a build pays for.
        parts = [{"name": p.name, "summary": p.summary, "digest": p.digest, "files": p.files} for p in self.parts]
        return {"uri": self.uri, "identifier": self.identifier, "parts": parts, "time": self.time, "how": self.how}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breakdown:
        parts = [Part(p["name"], p["summary"], p["digest"], {k: (v[0], v[1]) for k, v in p["files"].items()})
                 for p in data["parts"]]  # fmt: skip
        return cls(data["uri"], data["identifier"], parts, data["time"], str(data.get("how") or ""))

    @classmethod
    def from_json(cls, text: str) -> Breakdown:
        return cls.from_dict(json.loads(text))


def breakdown(plan: BuildPlan) -> Breakdown:
    """The record of a plan: its uri, identifier and parts, from the plan's single read."""
    parts = [Part(p.name, p.summary, p.digest, dict(p.files)) for p in plan.parts]
    return Breakdown(plan.uri, plan.identifier, parts)


HISTORY = 10  # builds remembered per image
# One JSON line per build appended (a build never rewrites the history); written again with its
# newer half past _COMPACT, so an image of tens of thousands of files still keeps its last builds.
_HEAD = b'["flyte-images builds",1]\n'
_COMPACT = 16 << 20
_LIMIT = 64 << 20


def _history_path(key: str) -> Path:
    return cache_dir() / "records" / f"{key}.jsonl"


def history(key: str) -> list[Breakdown]:
    """The last HISTORY builds of the image described by `key` (`_plan.description_key`),
    oldest first: the same identifier again only moves its time (and keeps how it was built when
    the later record is of an image found rather than built). A damaged line is no build."""
    builds: list[Breakdown] = []
    for line in cache_lines(_history_path(key), _HEAD, _LIMIT).split(b"\n"):
        try:
            build = Breakdown.from_dict(json.loads(line)) if line else None
        except (ValueError, KeyError, TypeError, AttributeError):
            build = None
        if build is None:
            continue
        if builds and builds[-1].identifier == build.identifier:
            builds[-1] = build if build.how else dataclasses.replace(build, how=builds[-1].how)
        else:
            builds.append(build)
    return builds[-HISTORY:]


def save_record(key: str, record: Breakdown) -> None:
    """Add a build to the image's history: one line appended (best effort: a record only
    explains later builds, so a build goes on without it)."""
    line = json.dumps(record.to_dict(), separators=(",", ":")).encode() + b"\n"
    with contextlib.suppress(OSError):
        append_cache_lines(_history_path(key), _HEAD, line, _COMPACT, _LIMIT)


def previous_build(key: str, current: Breakdown) -> tuple[Breakdown | None, Breakdown | None]:
    """(the build to compare `current` with, the last build when it is `current` itself).

    When nothing changed since the last build, the comparison is with the build before it, so
    `explain` still answers why the last build happened."""
    builds = history(key)
    if not builds:
        return None, None
    if builds[-1].identifier != current.identifier:
        return builds[-1], None
    earlier = [b for b in builds[:-1] if b.identifier != current.identifier]
    return (earlier[-1] if earlier else None), builds[-1]


def _file_changes(old: Files, new: Files) -> list[str]:
    changes = []
    for path in sorted(set(old) | set(new)):
        if path not in old:
            changes.append(f"{path} added")
        elif path not in new:
            changes.append(f"{path} removed")
        elif old[path] != new[path]:
            (old_mode, old_sha), (new_mode, new_sha) = old[path], new[path]
            if old_sha != new_sha:
                changes.append(f"{path} changed: sha {old_sha[:12]} -> {new_sha[:12]}")
            if old_mode != new_mode:
                changes.append(f"{path} mode {old_mode:o} -> {new_mode:o}")
    return changes


def compare(old: Breakdown | None, new: Breakdown) -> list[dict[str, Any]]:
    """Per part: name, summary, digest, status (new/unchanged/changed/added/removed), changes."""
    rows: list[dict[str, Any]] = []
    before = {p.name: p for p in old.parts} if old else {}
    for part in new.parts:
        row: dict[str, Any] = {"part": part.name, "summary": part.summary, "digest": part.digest[:12], "changes": []}
        previous = before.pop(part.name, None)
        if old is None:
            row["status"] = "no record"
        elif previous is None:
            row["status"] = "added"
        elif previous.digest == part.digest:
            row["status"] = "unchanged"
        else:
            row["status"] = "changed"
            row["changes"] = _file_changes(previous.files, part.files)
            if previous.summary != part.summary:
                row["changes"].append(f"arguments: {previous.summary} -> {part.summary}")
            if not row["changes"]:
                row["changes"].append("content changed (the renderer or identifier format changed)")
        rows.append(row)
    for name, part in before.items():
        rows.append({"part": name, "summary": part.summary, "digest": part.digest[:12], "status": "removed",
                     "changes": []})  # fmt: skip
    return rows
