"""Facts about a base image's file system, read from its layers in the registry: what a copy
appended without an engine needs to make BuildKit's bytes (the owner behind `--chown=flyte:flyte`,
the folders above the destination as the image has them).

The layers are read from the top down, as streams, and the reading stops at the first layer
below which nothing asked can change (a `useradd` layer's /etc/passwd never costs the download
of the distribution below it). Each layer applies the OCI whiteout rules to the ones below
(`d/.wh.x` deletes `d/x`, `d/.wh..wh..opq` hides what lower layers have in `d`, nothing exists
below a non-folder). Symlinks are reported, not followed. Answers depend only on the layer
digests, so they are kept on disk (cache_dir()/basefs) and never asked for twice.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import BuildError, RegistryError
from .._files.statcache import cache_dir, open_cache_folder, read_cache_file, write_atomically
from .._registry import Reference, Registry
from .fsentry import KINDS, MAX_CONTENT, Entry, normalize

if TYPE_CHECKING:
    from .layerscan import Seen

__all__ = ["Entry", "read_entries", "user_ids"]

log = logging.getLogger("flyte_images.append")

MAX_LINKS = 8  # hard links followed for one content, so a loop of them ends
CACHE_VERSION = 1
CACHE_BYTES = 16 * 1024 * 1024  # the oldest answers go when the folder grows past this


async def read_entries(
    registry: Registry,
    ref: Reference,
    layers: Sequence[Mapping[str, Any]],
    paths: Iterable[str],
    contents: Iterable[str] = (),
) -> dict[str, Entry | None]:
    """The entry of every path of `paths` and `contents` (with its bytes for `contents`) in the
    image whose manifest lists `layers` (bottom first), None for what it does not have. Keys are
    the paths as given. `ref` names the repository the blobs are in."""
    wanted = {_asked(path) for path in contents}
    asked = {path: _asked(path) for path in (*paths, *contents)}
    layers_key = hashlib.sha256("\n".join(str(layer.get("digest")) for layer in layers).encode()).hexdigest()
    found: dict[str, Entry | None] = {}
    for path in set(asked.values()):
        hit, entry = _cache_get(_cache_name(layers_key, path, path in wanted), path)
        if hit:
            found[path] = entry
    missing = set(asked.values()) - set(found)
    if missing:
        looked_up = await _lookup(registry, ref, layers, missing, wanted & missing, 0)
        for path, entry in looked_up.items():
            _cache_put(_cache_name(layers_key, path, path in wanted), path, entry)
        found.update(looked_up)
    return {given: found[path] for given, path in asked.items()}


async def _lookup(
    registry: Registry,
    ref: Reference,
    layers: Sequence[Mapping[str, Any]],
    paths: set[str],
    wanted: set[str],
    depth: int,
) -> dict[str, Entry | None]:
    # Here: the layer reader (tarfile, decompression) is needed only when the disk cache lacks an
    # answer, which an edit loop's lookups never do.
    from .layerscan import scan_layer

    decided: dict[str, Entry | None] = {}
    undecided = set(paths)
    for index in range(len(layers) - 1, -1, -1):
        if not undecided:
            break  # nothing below can change an answer: the lower layers are never downloaded
        interest = frozenset({"", *undecided, *(a for path in undecided for a in _ancestors(path))})
        seen = await scan_layer(registry, ref, layers[index], interest, frozenset(wanted & undecided))
        for path in sorted(undecided):
            final, entry = _decide(seen, path)
            if not final:
                continue
            undecided.discard(path)
            if entry is not None and path in seen.links and path in wanted:
                entry = await _through_link(registry, ref, layers[: index + 1], entry, seen.links[path], depth)
            decided[path] = entry
    return {path: decided.get(path) for path in paths}


def _decide(seen: Seen, path: str) -> tuple[bool, Entry | None]:
    """Whether this layer decides `path` for the layers below it, and the answer (None: absent)."""
    parents = _ancestors(path)
    if any(parent in seen.entries and seen.entries[parent].kind != "dir" for parent in parents):
        return True, None
    if path in seen.entries:
        if path in seen.big:
            raise BuildError(
                f"the base image's /{path} is {seen.big[path]} bytes, more than the {MAX_CONTENT // 1024} KiB read "
                "from a base layer; build this image with the engine"
            )
        return True, seen.entries[path]
    if any(p in seen.whiteouts for p in (*parents, path)) or any(p in seen.opaque for p in ("", *parents)):
        return True, None
    return False, None


async def _through_link(
    registry: Registry, ref: Reference, layers: Sequence[Mapping[str, Any]], link: Entry, target: str, depth: int
) -> Entry:
    """A hard link's entry with its target's content: the link's own header gives the metadata
    (containerd applies it to the shared inode), the target (in this layer or below) the bytes."""
    if depth >= MAX_LINKS or not target:
        raise RegistryError(f"/{link.path} in the layers of {ref} is a hard link that does not end in a file")
    found = (await _lookup(registry, ref, layers, {target}, {target}, depth + 1))[target]
    if found is None:
        raise RegistryError(f"/{link.path} in the layers of {ref} is a hard link to /{target}, which they do not have")
    if found.kind != "file":
        return dataclasses.replace(found, path=link.path)
    return dataclasses.replace(link, content=found.content)


def _asked(path: str) -> str:
    normalized = normalize(path)
    if not normalized:
        raise BuildError(f"{path!r} names the root folder, which every image has; ask for paths below it")
    return normalized


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _cache_name(layers_key: str, path: str, content: bool) -> str:
    return hashlib.sha256(f"{CACHE_VERSION}\0{layers_key}\0{path}\0{int(content)}".encode()).hexdigest() + ".json"


def _cache_get(name: str, path: str) -> tuple[bool, Entry | None]:
    """(True, the answer) when the file `name` holds one for `path`; anything else is a miss."""
    # Read as every cache file is: bounded, never through a symlink (a content is at most
    # MAX_CONTENT bytes, in base64).
    raw = read_cache_file(cache_dir() / "basefs" / name, 2 * MAX_CONTENT)
    try:
        data = json.loads(raw or b"null")
        if data["path"] != path:
            return False, None
        raw_entry = data["entry"]
        if raw_entry is None:
            return True, None
        numbers = (raw_entry["mode"], raw_entry["uid"], raw_entry["gid"], raw_entry["mtime"])
        kind, link, content = raw_entry["kind"], raw_entry["linkname"], raw_entry["content"]
        if kind not in KINDS or not all(type(n) is int for n in numbers) or not isinstance(link, str):
            return False, None
        blob = None if content is None else base64.b64decode(content, validate=True)
        return True, Entry(path, kind, *numbers, link, blob)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return False, None


def _cache_put(name: str, path: str, entry: Entry | None) -> None:
    """Keep one answer (written whole, then renamed); a cache that cannot be written only costs
    the next lookup its downloads. The oldest answers go past CACHE_BYTES."""
    raw = None
    if entry is not None:
        content = None if entry.content is None else base64.b64encode(entry.content).decode()
        raw = {**dataclasses.asdict(entry), "content": content}
    try:
        dfd = open_cache_folder(cache_dir() / "basefs")
        try:
            write_atomically(dfd, name, json.dumps({"path": path, "entry": raw}).encode())
            with os.scandir(dfd) as found:
                files = sorted(
                    (e.stat(follow_symlinks=False).st_mtime, e.stat(follow_symlinks=False).st_size, e.name)
                    for e in found
                    if e.name.endswith(".json")
                )
            total = sum(size for _t, size, _n in files)
            for _time, size, old in files:
                if total <= CACHE_BYTES:
                    break
                os.unlink(old, dir_fd=dfd)
                total -= size
        finally:
            os.close(dfd)
    except OSError as exc:
        log.debug("the base image cache could not be written: %s", exc)


# BuildKit's `COPY --chown=user:group` (moby/buildkit 73ed6825c4b7, llb/fileop.go and
# ops/user_linux.go): "root" and any decimal fitting an int32 are ids, anything else a name; an
# id user gets that id as uid and gid, a named one the uid and gid of the first /etc/passwd line
# with that name, and a group (id, or the first /etc/group line's) replaces the gid; "" is id 0.
# Lines as moby/sys/user reads them: trimmed, blanks skipped, "#" comments in /etc/group only.
# Where BuildKit silently falls back to 0 (a name or file not found, no number) this refuses.
def user_ids(passwd: bytes | None, group: bytes | None, user: str, group_name: str | None) -> tuple[int, int]:
    """The (uid, gid) BuildKit gives files copied with `--chown=user[:group_name]`, from the
    base image's /etc/passwd and /etc/group (None when it has none)."""
    number = _id(user)
    if number is not None:
        uid = gid = number
    else:
        uid, gid = _find(passwd, "/etc/passwd", "user", user, comments=False, fields=(2, 3))
    if group_name is not None:
        number = _id(group_name)
        if number is None:
            (number,) = _find(group, "/etc/group", "group", group_name, comments=True, fields=(2,))
        gid = number
    return uid, gid


def _id(text: str) -> int | None:
    if text in ("root", ""):  # "" is a name BuildKit sends as id 0
        return 0
    if not re.fullmatch(r"[+-]?[0-9]+", text) or not -(2**31) <= int(text) < 2**31:
        return None
    if int(text) < 0:
        raise BuildError(f"--chown names the negative id {text!r}; give an id from 0 to {2**31 - 1}")
    return int(text)


def _find(data: bytes | None, file: str, kind: str, name: str, *, comments: bool, fields: tuple[int, ...]) -> list[int]:
    fix = f"create the {kind} in the base image (RUN {kind}add {name}) or give numeric ids (--chown=1000:1000)"
    if data is None:
        raise BuildError(f"the base image has no {file} to find the {kind} {name!r} in; {fix}")
    for record in _records(data, comments):
        if record[0] == name:
            values = [record[i] if i < len(record) else "" for i in fields]
            if not all(v.isascii() and v.isdigit() and int(v) < 2**31 for v in values):
                raise BuildError(f"the base image's {file} gives the {kind} {name!r} no numeric id; {fix}")
            return [int(v) for v in values]
    raise BuildError(f"the base image has no {kind} {name!r} in {file} (BuildKit would silently use id 0); {fix}")


def _records(data: bytes, comments: bool) -> Iterator[list[str]]:
    for raw in data.split(b"\n"):
        line = raw.strip()
        if line and not (comments and line.startswith(b"#")):
            yield line.decode("utf-8", "surrogateescape").split(":")
