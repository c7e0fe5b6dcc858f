"""The build stage: from a plan to an image, by one route (see `route`).

options   BuildOptions: how to build, one frozen value handed down
route     build(), build_image(): choose the route, plan, decide, stage, execute, record
decide    the skip rule (is the image already there?)
engine    the engine route: a backend builds the staged plan
append    the append route: the engine part (a subplan) when missing, the file part appended
deploy    build_images(): every image of a deploy, decided together
secrets, records, result   what a build reads, leaves and returns
"""

from .options import BuildOptions
from .result import ImageBuild
from .route import build, build_image

__all__ = ["BuildOptions", "ImageBuild", "build", "build_image"]
