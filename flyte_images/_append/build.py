"""The append path of `build`: the engine part built by the engine only when the registry lacks
it, the file part appended in the registry. Chosen by `build_image` (see `choose`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import BuildError, ConfigError
from .._image import Image
from .._plan import BuildPlan
from .split import copy_destinations, copy_owner, engine_part, file_part, file_part_start, has_file_part
from .tarball import Folder, dst_folders

if TYPE_CHECKING:
    from flyte_images.builders.base import Progress

    from .._registry.push import Pusher
    from .image import PlatformImage
    from .split import FilePart

APPEND = "append"  # the `builder` name that forces this path


@dataclass(frozen=True)
class Choice:
    """Which path a build takes and why (said in progress, the result and `explain`)."""

    append: bool
    why: str


def choose(image: Image, builder: object, pushing: bool) -> Choice:
    """The append path when the image is pushed and ends in file layers, unless `builder` names
    an engine backend; `builder="append"` insists (and says why when it cannot)."""
    forced = builder == APPEND
    if builder is not None and not forced:
        return Choice(False, f"the builder {getattr(builder, 'name', builder)!s} was asked for")
    if image.is_reference:
        return Choice(False, "an existing image")
    if not pushing:
        if forced:
            raise ConfigError(
                "builder='append' writes the image into a registry, but this build loads it into the local "
                "engine: give the image a registry (or --push), or build with an engine builder"
            )
        return Choice(False, "loaded into the local engine")
    if not has_file_part(image):
        return Choice(False, "no trailing file layers (source files and folders, env vars, workdir) to append")
    return Choice(True, "pushed, and it ends in file layers")


def engine_plan(staged: BuildPlan) -> BuildPlan:
    """The engine part's plan (hash only, through the stat cache). Render options such as the CA
    bundle change the Dockerfile, never the identifier, so the defaults do here."""
    from .._plan import plan

    return plan(engine_part(staged.image))


def same_engine_layers(staged: BuildPlan, engine: BuildPlan) -> bool:
    """Whether the engine part's plan hashed the same inputs as the full plan for its layers (a
    file edited between the two reads would make the appended image differ from its tag)."""
    start = file_part_start(staged.image)
    full, part = staged.identity, engine.identity
    if not (isinstance(full, tuple) and isinstance(part, tuple) and len(full) > 6 and len(part) > 6):
        return True
    full_layers, part_layers = full[6], part[6]
    assert isinstance(full_layers, tuple) and isinstance(part_layers, tuple)
    return full[:6] == part[:6] and full_layers[:start] == part_layers[:start]


async def append_file_part(
    pusher: Pusher, staged: BuildPlan, engine_uri: str, say: Callable[[str], None]
) -> tuple[str, int]:
    """Append the file part of `staged` (open) to the engine part `engine_uri` (its tag, or its
    repository @ the digest its tag names) in the registry, pushed as the plan's uri; returns
    the digest and the number of layers appended."""
    from .image import append_parts

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
        base: dict[str, Folder | None] = {}
        for path in folders:
            found = entries.get(path)
            if found is not None and found.kind != "dir":
                raise BuildError(
                    f"/{path} is a {found.kind} in the engine part of {staged.uri}, and a copy goes into it; the "
                    "engine resolves that, appending does not: build with an engine builder (--builder docker)"
                )
            base[path] = None if found is None else Folder(found.mode, found.uid, found.gid, found.mtime)
        owners: dict[tuple[str, str], tuple[int, int]] = {}
        if names:
            passwd, group = entries.get("etc/passwd"), entries.get("etc/group")
            for found in (passwd, group):
                if found is not None and found.kind != "file":
                    raise BuildError(
                        f"/{found.path} is a {found.kind} in the engine part of {staged.uri}; appending reads users "
                        "only from a plain file: build with an engine builder (--builder docker)"
                    )
            for user, group_name in names:
                owners[(user, group_name)] = basefs.user_ids(
                    passwd.content if passwd else None, group.content if group else None, user, group_name
                )
        key = (image.workdir, tuple(sorted(owners.items())), tuple(sorted(base.items(), key=lambda kv: kv[0])))
        if key not in made:
            made[key] = file_part(staged, image.workdir, folders=base, owners=owners)
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


def elapsed(started: float) -> str:
    return f"{time.monotonic() - started:.2f} s"


def check_engine_part(staged: BuildPlan, engine: BuildPlan, built_uri: str | None = None) -> None:
    if not same_engine_layers(staged, engine) or (built_uri is not None and built_uri != engine.uri):
        raise BuildError(
            f"the files of {staged.uri}'s engine part changed while it was built; build again once edits settle"
        )
