"""What a build returns: the image's uri as a `str`, with how it came to be."""

from __future__ import annotations

from collections.abc import Mapping


class ImageBuild(str):
    """The uri of a built (or already existing) image; a `str`, with details as attributes.

    `uri` the image reference, `built` whether a build ran, `reason` why not (or how it was
    built), `digest` the pushed manifest digest or loaded image id when known, `dockerfile` the
    rendered text, `path` "engine" or "append" for a build that ran (see `build`), "builder" for
    one a Flyte SDK image builder object made (`init(image_builder=obj)`). `nodes` (platform ->
    BuildKit daemon address) and `waited` (platform -> seconds waited for a build slot there) say
    where a backend that chooses a daemon (the buildkit backend, one daemon or a pool) built each
    platform; empty for the others, and for an image that was not built.
    It also constructs and reads as the Flyte SDK's `ImageBuild(uri, remote_run, build_run)`:
    `remote_run` and `build_run` (a remote build's run) are None here, as for the SDK's local
    builder. Builds here always finish before returning, so a build's `uri` is always a str; an
    `ImageBuild(uri=None)` made as in the SDK (a remote build still running) keeps `uri` None,
    as the SDK's does, and reads as the empty string.
    """

    uri: str | None
    remote_run: object | None
    build_run: object | None
    built: bool
    reason: str
    digest: str | None
    dockerfile: str
    path: str
    nodes: Mapping[str, str]
    waited: Mapping[str, float]

    def __new__(
        cls,
        uri: str | None,
        remote_run: object | None = None,
        build_run: object | None = None,
        *,
        built: bool = False,
        reason: str = "",
        digest: str | None = None,
        dockerfile: str = "",
        path: str = "",
        nodes: Mapping[str, str] | None = None,
        waited: Mapping[str, float] | None = None,
    ) -> ImageBuild:
        value = super().__new__(cls, uri or "")
        value.uri = uri
        value.remote_run = remote_run
        value.build_run = build_run
        value.built = built
        value.reason = reason
        value.digest = digest
        value.dockerfile = dockerfile
        value.path = path
        value.nodes = dict(nodes or {})
        value.waited = dict(waited or {})
        return value

    def __getnewargs__(self) -> tuple[str | None, object | None, object | None]:  # type: ignore[override]
        # Copies and pickles keep the SDK's fields; the details are restored from __dict__.
        return (self.uri, self.remote_run, self.build_run)

    def where(self) -> str:
        """Where each platform was built, for people (`placement`)."""
        return placement(self.nodes, self.waited)


def placement(nodes: Mapping[str, str], waited: Mapping[str, float] | None = None) -> str:
    """`linux/amd64 on tcp://bk-1:1234 (waited 0.4 s), ...`: where each platform is (or would be)
    built, for people; empty when no daemon was chosen."""
    waited = waited or {}
    return ", ".join(
        f"{platform} on {node}" + (f" (waited {waited[platform]:.1f} s)" if waited.get(platform) else "")
        for platform, node in sorted(nodes.items())
    )
