"""Why an image has the tag it has, and what changed since it was last built.

`breakdown(image)` splits the identifier into its parts (the base, the target Python and
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
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._encoding import Encodable, encode
from ._identity import TAG_HEX_DIGITS, _base, image_identity, source_context
from ._image import Image
from ._layers import (
    DockerIgnore,
    Layer,
    PoetryProject,
    PythonWheels,
    Requirements,
    SourceFile,
    SourceFolder,
    UVProject,
    UVScript,
)
from ._sources import SourceContext, folder_entries, relative_to_first, single_file
from ._statcache import StatCache, cache_dir

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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Breakdown:
        data = json.loads(text)
        parts = [Part(p["name"], p["summary"], p["digest"], {k: (v[0], v[1]) for k, v in p["files"].items()})
                 for p in data["parts"]]  # fmt: skip
        return cls(data["uri"], data["identifier"], parts, data["time"])


def _digest(value: Encodable) -> str:
    return hashlib.sha256(encode(value)).hexdigest()


def _tree_files(folder: Path, ctx: SourceContext, prefix: str = "", defaults: bool = True) -> Files:
    tree = folder_entries(folder, ctx, defaults=defaults)
    return {f"{prefix}{e.path}": (e.mode, e.digest) for e in tree.entries if e.kind != "dir"}


def _one(path: Path, ctx: SourceContext, name: str | None = None) -> Files:
    entry = single_file(path, ctx, "file")
    return {name or path.name: (entry.mode, entry.digest)}


def layer_files(layer: Layer, ctx: SourceContext) -> Files:
    """Every file a layer reads, by the path the image knows it under."""
    if isinstance(layer, SourceFile):
        return _one(layer.src, ctx)
    if isinstance(layer, SourceFolder):
        return _tree_files(layer.src, ctx, f"{layer.target_name}/" if layer.target_name else "")
    if isinstance(layer, Requirements):
        paths = layer.files()
        files: Files = {}
        for rel, path in zip(relative_to_first(paths), paths, strict=True):
            files.update(_one(path, ctx, rel))
        return files
    if isinstance(layer, (UVProject, PoetryProject)):
        lock = layer.uvlock if isinstance(layer, UVProject) else layer.poetry_lock
        files = {**_one(layer.pyproject, ctx), **_one(lock, ctx)}
        if layer.project_install_mode == "install_project":
            files.update(_tree_files(layer.pyproject.parent, ctx, f"{layer.pyproject.parent.name}/"))
        return files
    if isinstance(layer, UVScript):
        return _one(layer.script, ctx)
    if isinstance(layer, PythonWheels):
        return {k: v for w in layer.wheels() for k, v in _one(w, ctx).items()}
    if isinstance(layer, DockerIgnore):
        return _one(layer.path, ctx)
    return {}


def describe(layer: Layer) -> str:
    """The layer's arguments, with paths shown by name (files are listed separately)."""
    parts = []
    for f in dataclasses.fields(layer):  # type: ignore[arg-type]
        value = getattr(layer, f.name)
        if value in (None, (), False, "") and f.name != "workdir":
            continue
        if isinstance(value, Path):
            value = value.name
        elif isinstance(value, tuple) and value and isinstance(value[0], tuple):
            value = " ".join(f"{k}={v}" for k, v in value)
        elif isinstance(value, tuple):
            value = " ".join(str(getattr(v, "key", v)) for v in value)
        parts.append(f"{f.name}={value}")
    return " ".join(parts)


def breakdown(image: Image, cache: StatCache | None = None) -> Breakdown:
    ctx = source_context(image, cache)
    identity = image_identity(image, cache)
    base = _base(image, ctx)
    base_files: Files = {}
    if image.dockerfile is not None:
        base_files = {**_one(image.dockerfile, ctx), **_tree_files(image.dockerfile.parent, ctx, defaults=False)}
    version = "from the base image" if image.python_version is None else "{}.{}".format(*image.python_version)
    parts = [
        Part("base", str(image.resolved_base_image() or image.dockerfile), _digest(base), base_files),
        Part(
            "target",
            f"python {version}, {', '.join(image.platform)}",
            _digest(identity[1:3] + identity[4:6]),  # type: ignore[operator,index]
        ),
    ]
    for index, layer in enumerate(image._layers, start=1):
        digest = _digest(layer.identity(ctx))
        parts.append(Part(f"{index} {layer.KIND}", describe(layer), digest, layer_files(layer, ctx)))
    return Breakdown(image.uri, _digest(identity)[:TAG_HEX_DIGITS], parts)


def _record_path(uri: str) -> Path:
    repository = uri.rsplit(":", 1)[0] if "/" not in uri.rsplit(":", 1)[-1] else uri
    return cache_dir() / "records" / (hashlib.sha256(repository.encode()).hexdigest()[:20] + ".json")


def save_record(record: Breakdown) -> None:
    path = _record_path(record.uri)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".record-", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(record.to_json())
        Path(tmp).replace(path)


def last_record(uri: str) -> Breakdown | None:
    try:
        return Breakdown.from_json(_record_path(uri).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
