"""A plan split in two: the engine part (the base and every layer up to the last one that needs
a RUN), built by the engine under its own tag, and the file part (`part`: the trailing layers
that only add source files and folders or set ENV and WORKDIR), appended to it here (`tarball`,
`image`): its layers, their owners and destinations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .._errors import BuildError
from .._image.layers import Env, WorkDir
from .._plan.plan import BuildPlan
from .part import COPY_KINDS, dst_folders, file_part_start, resolve
from .tarball import Folder, LayerBlob, copy_layer


@dataclass
class FilePart:
    """What `append` needs: the layers, the run-config changes and the labels."""

    layers: list[LayerBlob] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    workdir: str | None = None
    history: list[str] = field(default_factory=list)  # ENV and WORKDIR, which add no layer
    labels: dict[str, str] = field(default_factory=dict)


def copy_owner(plan: BuildPlan, index: int) -> tuple[str, str] | None:
    """The `--chown` user and group of the copy of layer `index` (None: owned by root)."""
    source = f'"_fi/{index}/"'
    for text in plan.instructions:
        if text.startswith("COPY ") and source in text:
            flag = text.split()[1]
            if not flag.startswith("--chown="):
                return None
            user, _, group = flag.removeprefix("--chown=").partition(":")
            return user, group or user
    raise BuildError(f"layer {index + 1} of {plan.uri} renders no copy of _fi/{index}/; restage the image")


def copy_destinations(plan: BuildPlan, base_workdir: str | None) -> list[tuple[int, str]]:
    """Every copy of the file part as (layer position, absolute destination)."""
    out: list[tuple[int, str]] = []
    workdir = base_workdir
    layers = plan.image._layers
    for index in range(file_part_start(plan.image), len(layers)):
        layer = layers[index]
        if isinstance(layer, WorkDir):
            workdir = resolve(workdir, layer.workdir)
        elif isinstance(layer, COPY_KINDS):
            dst = resolve(workdir, layer.dst)
            if dst is None:
                raise BuildError(
                    f"layer {index + 1} copies to the relative {layer.dst!r} and the engine part's working folder "
                    "is not known; pass base_workdir (its WorkingDir), or give an absolute dst"
                )
            out.append((index, dst))
    return out


def file_part(
    plan: BuildPlan,
    base_workdir: str | None = None,
    *,
    folders: Mapping[str, Folder | None] | None = None,
    owners: Mapping[tuple[str, str], tuple[int, int]] | None = None,
    compression: str = "gzip",
) -> FilePart:
    """The file part of a staged plan (`staged_plan`, still open) as layers and config changes.
    `base_workdir`: the engine part's working folder (for a relative destination before the file
    part sets one); `folders`: the copies' destinations and their parents as the engine part has
    them (None: it has not); `owners`: the `--chown` user and group names as its /etc/passwd and
    /etc/group number them (see `basefs` and `push.append_file_part`); `compression`: of the
    layers, gzip or zstd."""
    if plan.context is None:
        raise BuildError("the plan is not staged; make the file part inside `with staged_plan(image) as plan:`")
    out = FilePart(labels=dict(plan.labels))
    made: dict[str, Folder] = {}  # folders the file part's own layers wrote
    destinations = dict(copy_destinations(plan, base_workdir))
    layers = plan.image._layers
    workdir = base_workdir
    for index in range(file_part_start(plan.image), len(layers)):
        layer = layers[index]
        if isinstance(layer, Env):
            out.env += list(layer.env_vars)
            out.history.append("ENV " + " ".join(f"{k}={v}" for k, v in layer.env_vars))
        elif isinstance(layer, WorkDir):
            workdir = resolve(workdir, layer.workdir)
            out.workdir = workdir
            out.history.append(f"WORKDIR {layer.workdir}")
        elif isinstance(layer, COPY_KINDS):
            dst = destinations[index]
            names = copy_owner(plan, index)
            owner = (0, 0)
            if names is not None:
                if owners is None or names not in owners:
                    raise BuildError(
                        f"layer {index + 1} copies as {names[0]}:{names[1]} (--chown); give their ids as the engine "
                        "part's /etc/passwd and /etc/group say (basefs.user_ids)"
                    )
                owner = owners[names]
            written: dict[str, Folder] = {}
            for path in dst_folders(dst):
                if path in made:
                    written[path] = made[path]
                    continue
                if folders is None or path not in folders:
                    raise BuildError(
                        f"layer {index + 1} copies into /{path}; give whether the engine part has it (basefs)"
                    )
                existing = folders[path]
                written[path] = existing if existing is not None else Folder(0o755, *owner)
                made[path] = written[path]
            source = plan.context / "_fi" / str(index)
            text = f'COPY ["_fi/{index}/", "{layer.dst.rstrip("/")}/"]'
            blob, below = copy_layer(
                source, dst, owner=owner, folders=written, created_by=text, compression=compression
            )
            out.layers.append(blob)
            made.update(below)
    return out
