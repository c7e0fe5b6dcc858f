"""A plan split in two: the engine part (the base and every layer up to the last one that needs
a RUN) and the file part (the trailing layers that only add files or change the run config:
source files and folders, environment variables, the working folder).

The engine part is an ordinary image, built by the engine under its own content-hashed tag; the
file part is appended to it here (`tarball`, `image`), in the order the Dockerfile has it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from .._errors import BuildError
from .._image import Image
from .._layers import DockerIgnore, Env, Layer, SourceFile, SourceFolder, WorkDir
from .._plan import BuildPlan
from .tarball import LayerBlob, layer_tar

FILE_PART_KINDS = (SourceFile, SourceFolder, Env, WorkDir, DockerIgnore)


def file_part_start(image: Image) -> int:
    """The position of the first layer of the file part (len(layers) when there is none)."""
    start = len(image._layers)
    while start > 0 and isinstance(image._layers[start - 1], FILE_PART_KINDS):
        start -= 1
    return start


def engine_part(image: Image) -> Image:
    """The image without its file part. Ignore rules of the file part stay: they render nothing
    but shape the engine part's own copies."""
    start = file_part_start(image)
    kept: list[Layer] = list(image._layers[:start])
    kept += [layer for layer in image._layers[start:] if isinstance(layer, DockerIgnore)]
    return image._replace(_layers=tuple(kept))


@dataclass
class FilePart:
    """What `append` needs: the layers, the run-config changes and the labels."""

    layers: list[LayerBlob] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    workdir: str | None = None
    history: list[str] = field(default_factory=list)  # ENV and WORKDIR, which add no layer
    labels: dict[str, str] = field(default_factory=dict)


def file_part(plan: BuildPlan, base_workdir: str | None = None) -> FilePart:
    """The file part of a staged plan (`staged_plan`, still open) as layers and config changes.

    `base_workdir` is the engine part's working folder, needed only when a copy names a
    relative destination before the file part sets one itself."""
    if plan.context is None:
        raise BuildError("the plan is not staged; make the file part inside `with staged_plan(image) as plan:`")
    if "COPY --chown=" in plan.dockerfile:
        raise BuildError(
            f"{plan.uri} copies its files as the `flyte` user (COPY --chown=flyte:flyte), whose uid the base "
            "image decides; appending without the engine supports only images whose copies are owned by root, "
            "so build it with the engine"
        )
    out = FilePart(labels=dict(plan.labels))
    workdir = base_workdir
    layers = plan.image._layers
    for index in range(file_part_start(plan.image), len(layers)):
        layer = layers[index]
        if isinstance(layer, Env):
            out.env += list(layer.env_vars)
            out.history.append("ENV " + " ".join(f"{k}={v}" for k, v in layer.env_vars))
        elif isinstance(layer, WorkDir):
            workdir = posixpath.normpath(posixpath.join(workdir or "/", layer.workdir))
            out.workdir = workdir
            out.history.append(f"WORKDIR {layer.workdir}")
        elif isinstance(layer, (SourceFile, SourceFolder)):
            dst = layer.dst
            if not dst.startswith("/"):
                if workdir is None:
                    raise BuildError(
                        f"layer {index + 1} copies to the relative {dst!r} and the engine part's working folder "
                        "is not known; pass base_workdir (its WorkingDir), or give an absolute dst"
                    )
                dst = posixpath.join(workdir, dst)
            text = f'COPY ["_fi/{index}/", "{layer.dst.rstrip("/")}/"]'
            out.layers.append(layer_tar(plan.context / "_fi" / str(index), dst, created_by=text))
    return out
