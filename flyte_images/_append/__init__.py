"""Source edits without a build engine: the file part of an image (trailing copies, ENV and
WORKDIR) appended in the registry to its engine part, as deterministic layer tarballs and a new
config and manifest. The names below load their module when first used: every build asks
`build.choose`, and one that loads into the local engine must not pay for httpx and asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .image import append_async, merge_env, new_config
    from .part import engine_part, file_part_start
    from .split import file_part
    from .tarball import copy_layer

_LAZY = {
    "append_async": ".image",
    "copy_layer": ".tarball",
    "engine_part": ".part",
    "file_part": ".split",
    "file_part_start": ".part",
    "merge_env": ".image",
    "new_config": ".image",
}

__all__ = ["append_async", "copy_layer", "engine_part", "file_part", "file_part_start", "merge_env", "new_config"]


def __getattr__(name: str) -> object:
    from .._lazy import attribute

    return attribute(__name__, _LAZY, name, globals())
