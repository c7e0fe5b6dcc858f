"""The file part of a staged plan appended in the registry to its engine part: what each
platform's engine part holds is read (folders, users), the layers made, the image pushed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import BuildError
from .._plan.plan import BuildPlan
from .part import dst_folders
from .split import copy_destinations, copy_owner, file_part
from .tarball import Folder

if TYPE_CHECKING:
    from flyte_images.builders.base import Progress

    from .._registry import Registry
    from .image import PlatformImage
    from .split import FilePart


async def append_file_part(
    pusher: Registry,
    staged: BuildPlan,
    engine_uri: str,
    say: Callable[[str], None],
    compression: str | None = None,
) -> tuple[str, int]:
    """Append the file part of `staged` (open) to the engine part `engine_uri` (its tag, or its
    repository @ the digest its tag names) in the registry, pushed as the plan's uri; returns
    the digest and the number of layers appended. `compression` (gzip, zstd) is the layers';
    None: that of the engine part's top layer. A Docker manifest has no zstd layer type, so
    layers appended to one are gzip."""
    from .image import OCI_MANIFEST, append_parts, compression_of

    made: dict[object, FilePart] = {}

    async def make(image: PlatformImage) -> FilePart:
        from . import basefs

        destinations = copy_destinations(staged, image.workdir)
        names = {pair for pair in (copy_owner(staged, index) for index, _dst in destinations) if pair is not None}
        folders = sorted({path for _index, dst in destinations for path in dst_folders(dst)})
        contents = ("etc/passwd", "etc/group") if names else ()
        entries: dict[str, basefs.Entry | None] = {}
        if folders or contents:
            say(f"reading {image.platform or 'the base'}: {', '.join('/' + f for f in (*folders, *contents))}")
            entries = await basefs.read_entries(
                pusher, image.ref, list(image.manifest.get("layers") or []), folders, contents
            )
        for path, found in entries.items():
            wanted = "dir" if path in folders else "file"
            if found is not None and found.kind != wanted:
                raise BuildError(
                    f"/{path} is a {found.kind} in the engine part of {staged.uri}, not a {wanted}: "
                    f"{'a copy goes into it' if wanted == 'dir' else 'appending reads users only from a plain file'}; "
                    "the engine resolves that, appending does not: build with an engine builder (--builder docker)"
                )
        base = {p: None if (f := entries.get(p)) is None else Folder(f.mode, f.uid, f.gid, f.mtime) for p in folders}
        passwd, group = (None if (f := entries.get(p)) is None else f.content for p in ("etc/passwd", "etc/group"))
        owners = {pair: basefs.user_ids(passwd, group, *pair) for pair in names}
        chosen = compression or compression_of(image)
        if chosen == "zstd" and image.media_type != OCI_MANIFEST:
            say(f"{image.platform or 'the base'} has a Docker manifest, which has no zstd layer type: appending gzip")
            chosen = "gzip"
        key = (image.workdir, tuple(sorted(owners.items())), tuple(sorted(base.items(), key=lambda kv: kv[0])), chosen)
        if key not in made:
            made[key] = file_part(staged, image.workdir, folders=base, owners=owners, compression=chosen)
        return made[key]

    try:
        digest = await append_parts(pusher, engine_uri, staged.uri, make)
    finally:
        for part in made.values():
            for layer in part.layers:
                layer.close()  # a spooled layer's temporary file goes now, not when collected
    count = max((len(part.layers) for part in made.values()), default=0)
    return digest, count


def step(progress: Progress, text: str) -> None:
    from flyte_images.builders.base import ProgressEvent

    progress(ProgressEvent(kind="step", step=text, text=text, line=f"#append {text}"))
