"""flyte-images as an image builder of the Flyte SDK 2.12.x (entry point `flyte-images` in the group
`flyte.plugins.image_builders`): `flyte.init(image_builder="flyte-images")`, or `image: {builder:
flyte-images}` in config.yaml.

flyte owns the tag: it computes the uri, asks our checker whether it exists and calls
`build_image` only when it does not; the image is translated (`from_flyte`), rendered, built by
the backend our settings select and tagged as flyte's uri (its identity label is our own
identifier). Unlike flyte 2.12.1's docker builder, an image built FROM its published one ends as
`flyte`, a `with_workdir` is kept, and its builder's extras (nvidia paths, UV_COMPILE_BYTECODE,
`_F_IMG_ID`, bash as SHELL) and its recipe's two OCI labels are not added. The checker answers
flyte's contract exactly: the uri, None when definitely absent, an exception when it cannot tell
(never "exists" for that, as flyte's own fallback when every checker failed does).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .._errors import RegistryError
from ._compat import require_supported_flyte
from .convert import from_flyte

if TYPE_CHECKING:
    import flyte
    from flyte._image import Architecture
    from flyte.extend import ImageChecker


class FlyteImagesBuilder:
    """flyte's `ImageBuilder` protocol, building with flyte-images."""

    def __init__(self) -> None:
        # flyte loads the entry point and calls it: refuse an unsupported flyte before any build.
        self.flyte_version = require_supported_flyte()

    def __str__(self) -> str:
        return "flyte-images"

    def get_checkers(self) -> list[type[ImageChecker]] | None:
        # Only ours: flyte's PersistentCacheImageChecker would answer "exists" for a day from its
        # own record even after the image was deleted from the registry.
        return [FlyteImagesChecker]

    async def build_image(
        self, image: flyte.Image, dry_run: bool, wait: bool = True, force: bool = False
    ) -> flyte.ImageBuild:
        """Build `image` at the uri flyte computed; push it when it has a registry, else load it
        into the local engine. `wait` is accepted for the protocol: the build always completes
        before this returns."""
        from flyte import ImageBuild

        from .. import _build

        del wait
        ours = from_flyte(image)
        result = await asyncio.to_thread(
            _build.build_image,
            ours,
            _build.BuildOptions(dry_run=dry_run, force=force, push=bool(image.registry)),
            uri=image.uri,
        )
        return ImageBuild(uri=result.uri, remote_run=None)


class FlyteImagesChecker:
    """flyte's `ImageChecker` protocol, answered by our registry client and skip rule."""

    @classmethod
    async def image_exists(
        cls, repository: str, tag: str, arch: tuple[Architecture, ...] = ("linux/amd64",)
    ) -> str | None:
        """`repository:tag` when it exists with every platform in `arch`, None when it definitely
        does not; raises RegistryError when that cannot be told."""
        return await asyncio.to_thread(exists, f"{repository}:{tag}", tuple(arch))


def exists(uri: str, platforms: tuple[str, ...]) -> str | None:
    """The checker's answer for one uri. A uri naming a registry is asked there (with the rule
    our builds use, including the window after a push from this machine); one without a registry
    is what our build loads into the local engine, so the engine is asked."""
    from .._build.decide import Question, decide

    if not _names_registry(uri):
        from .._build.backends import get_builder

        found = get_builder().local_exists(uri)
        if found is None:
            raise RegistryError(f"cannot tell whether {uri} is in the local engine; the engine did not answer")
        return uri if found else None
    decision = decide([Question(uri, platforms, pushing=True)], None, strict=True)[0]
    if decision.failure:
        raise RegistryError(decision.reason)
    return None if decision.build else uri


def _names_registry(uri: str) -> bool:
    """Docker's rule: the first path component is a registry host when it has a '.' or a ':'
    or is 'localhost'."""
    first, slash, _rest = uri.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")
