"""Source edits without a build engine: the file part of an image (trailing copies, ENV and
WORKDIR) appended in the registry to its engine part, as deterministic layer tarballs and a new
config and manifest. Not yet chosen automatically by `build` (see issue 19)."""

from .image import append, append_async, merge_env, new_config
from .split import FilePart, engine_part, file_part, file_part_start
from .tarball import LayerBlob, layer_tar

__all__ = [
    "FilePart",
    "LayerBlob",
    "append",
    "append_async",
    "engine_part",
    "file_part",
    "file_part_start",
    "layer_tar",
    "merge_env",
    "new_config",
]
