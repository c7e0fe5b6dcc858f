"""The build stage: from a plan to an image, by one route (see `route`).

options   BuildOptions: how to build, one frozen value handed down
route     build(), build_image(): choose the route, plan, hand the plan to the route
job       what every route shares: Route (questions, run), Job, the skip rule's answers
decide    the skip rule (is the image already there?)
engine_route  the engine route (a backend builds the staged plan; `engine` runs the backend)
              and the builder-object route (a Flyte SDK image builder builds the whole Image)
append    the append route: the engine part (a subplan) when missing, the file part appended
deploy    build_images(): every image of a deploy, decided together
secrets, records, result   what a build reads, leaves and returns
"""

from .options import BuildOptions
from .result import ImageBuild
from .route import build, build_image

__all__ = ["BuildOptions", "ImageBuild", "build", "build_image"]
