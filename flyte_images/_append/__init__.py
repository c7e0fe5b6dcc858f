"""Source edits without a build engine: the file part of an image (trailing copies, ENV and
WORKDIR) appended in the registry to its engine part, as deterministic layer tarballs and a new
config and manifest. `build` chooses this path itself (`build.choose`, `run.by_append`).

The names below load their module when first used: every build asks `build.choose`, and a
build that loads into the local engine must not pay for httpx, asyncio and the registry models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .image import append_async, merge_env, new_config
    from .split import FilePart, engine_part, file_part, file_part_start
    from .tarball import LayerBlob, layer_tar

_LAZY = {
    "FilePart": ".split",
    "LayerBlob": ".tarball",
    "append_async": ".image",
    "engine_part": ".split",
    "file_part": ".split",
    "file_part_start": ".split",
    "layer_tar": ".tarball",
    "merge_env": ".image",
    "new_config": ".image",
}

__all__ = [
    "FilePart",
    "LayerBlob",
    "append_async",
    "engine_part",
    "file_part",
    "file_part_start",
    "layer_tar",
    "merge_env",
    "new_config",
]


def __getattr__(name: str) -> object:
    from .._lazy import attribute

    return attribute(__name__, _LAZY, name, globals())
