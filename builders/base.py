"""The one seam between flyte-images and a build backend (`Builder`).

A backend owns everything that talks to an engine: whether an image is in the engine's own store
(`local_exists`), and building one staged context for some platforms, then pushing or loading it
(`build`), reporting `ProgressEvent`s through the shared `builders.output.BuildOutput` (which
redacts secret values). What it can do beyond that it declares (`exports_cache`,
`multi_platform`, `loads`, and optionally `compressions`); the core reads those, never which
backend runs. Built-in backends are
found by name (docker, buildkit), others through the entry-point group `flyte_images.builders`;
each passes the conformance suite in `flyte_images.testing.conformance`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol, TypeGuard, runtime_checkable

from flyte_images._errors import ConfigError

IDENTITY_LABEL = "dev.flyte-images.identifier"
CACHE_TAG = "buildcache"


@dataclass(frozen=True)
class SecretSource:
    """Where a build secret's value comes from: the name of an environment variable, or a file (never the value)."""

    id: str
    env: str | None = None
    file: Path | None = None

    def buildkit_spec(self) -> str:
        return f"id={self.id},env={self.env}" if self.env else f"id={self.id},src={self.file}"


@dataclass(frozen=True)
class BuildRequest:
    """One staged build: the context folder holds exactly the files the tag was computed from."""

    context: Path
    dockerfile: Path
    tags: tuple[str, ...]
    platforms: tuple[str, ...]
    push: bool
    secrets: tuple[SecretSource, ...] = ()
    # Several platforms with cache="registry": one spec per platform (`cache_tag`), and
    # `for_platform` narrows the request to one platform and its own cache.
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    redact: tuple[str, ...] = ()  # secret values that must never appear in progress or errors
    no_cache: bool = False  # re-run every step: no layer reused from the engine's cache or cache_from
    compression: str = "gzip"  # of the pushed layers: "gzip" or "zstd" (a backend's `compressions`)


@dataclass(frozen=True)
class BuildResult:
    """What a build made. `nodes` and `waited` are filled by backends that choose where a build
    runs (buildkit): per platform, the daemon address that built it and the seconds its build
    waited for a free build slot there; a platform an earlier build had pushed is in neither."""

    reference: str
    digest: str | None  # the pushed manifest digest, or the loaded image id
    nodes: Mapping[str, str] = field(default_factory=dict)  # platform -> BuildKit daemon address
    waited: Mapping[str, float] = field(default_factory=dict)  # platform -> seconds waiting for a slot


@dataclass(frozen=True)
class ProgressEvent:
    """One thing a build reports, already redacted.

    kind "step": a step started (`step` is its title, e.g. "[2/5] RUN uv pip install ...");
    kind "log": a line of output (`step` is the title of the step that printed it, or "").
    `line` is the raw (redacted) line as the engine printed it, for plain logs.
    """

    kind: Literal["step", "log"]
    step: str
    text: str
    line: str


Progress = Callable[[ProgressEvent], None]


@runtime_checkable
class Builder(Protocol):
    """A build backend.

    The three capabilities are read-only and may be plain class attributes or properties (a
    property may ask the engine, once, when read). `is_backend` checks an object without reading
    them; `isinstance(x, Builder)` reads them on Python before 3.12.

    A fourth is optional, so backends written before it keep working: `compressions`, a
    `ClassVar[tuple[str, ...]]` of the layer compressions a push can write (`BuildRequest.compression`:
    "gzip", "zstd"); one that does not declare it writes gzip only (`compressions_of`). So is
    `routing(reference, platforms, push) -> dict[str, str]`: for a backend that chooses where a
    build runs (a daemon, a node of a pool), platform -> where it would run, for `--dry-run`
    (`routing_of`).
    """

    name: ClassVar[str]

    @property
    def exports_cache(self) -> bool:
        """Whether `BuildRequest.cache_to` is written (a registry layer cache), not only `cache_from` read."""
        ...

    @property
    def multi_platform(self) -> bool:
        """Whether several platforms are built in one build and pushed as one image index by that
        build; without it, each platform is built and pushed on its own, then joined by an index."""
        ...

    @property
    def loads(self) -> bool:
        """Whether a build with `push=False` loads the image into a local store `local_exists` asks."""
        ...

    def local_exists(self, reference: str) -> bool | None:
        """Whether `reference` is in the engine's local image store; None when it cannot tell."""
        ...

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        """Build, then push (request.push) or load into the local store; raise a BuildError."""
        ...


CAPABILITIES = ("exports_cache", "multi_platform", "loads")
GZIP_ONLY = ("gzip",)
_MEMBERS = ("name", *CAPABILITIES, "local_exists", "build")


def missing_members(value: object) -> list[str]:
    """The members of `Builder` that `value` does not declare, looked up in its class and its own
    attributes without reading them (a capability may be a property that asks the engine)."""
    own = getattr(value, "__dict__", {})
    # Builder's own stubs answer None: a class that names it as a base still declares each member.
    declared = [vars(klass) for klass in type(value).__mro__ if klass is not Builder]
    return [name for name in _MEMBERS if name not in own and not any(name in names for names in declared)]


def is_backend(value: object) -> TypeGuard[Builder]:
    """Whether `value` is a backend instance (not a class): it declares every member of `Builder`."""
    return not isinstance(value, type) and not missing_members(value)


def compressions_of(backend: object) -> tuple[str, ...]:
    """The layer compressions `backend` can push: its `compressions`, else gzip only."""
    declared = getattr(backend, "compressions", GZIP_ONLY)
    return tuple(declared) if isinstance(declared, (tuple, list)) else GZIP_ONLY


def routing_of(backend: object, reference: str, platforms: tuple[str, ...], push: bool) -> dict[str, str]:
    """Where `backend` would build each platform of `reference` (its optional `routing`); empty
    for a backend that does not choose."""
    routing = getattr(backend, "routing", None)
    return dict(routing(reference, platforms, push)) if callable(routing) else {}


def check_compression(backend: object, compression: str, pushing: bool = True) -> None:
    """Refuse a pushed build whose `compression` the backend cannot write (a loaded image goes
    into the engine's own store, where the compression of a push plays no part)."""
    if not pushing or compression in compressions_of(backend):
        return
    name = getattr(backend, "name", type(backend).__name__)
    raise ConfigError(
        f"the {name} backend cannot push {compression} layers (it writes {', '.join(compressions_of(backend))}): "
        "build with builder='buildkit' (--builder buildkit), which writes zstd, or with compression='gzip'"
    )


def cache_tag(platform: str) -> str:
    """The tag of one platform's registry layer cache: `buildcache-linux-amd64`
    (linux/arm/v7: `buildcache-linux-arm-v7`). One tag per platform, since a cache export holds
    the layers of the platforms its build made, and each platform is built by its own node."""
    return f"{CACHE_TAG}-{'-'.join(platform.split('/'))}"


def registry_cache_specs(repository: str, tag: str = CACHE_TAG) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(cache_from, cache_to) for a BuildKit registry layer cache kept at `repository:tag`; every
    backend reads `cache_from`, one that `exports_cache` writes `cache_to`.

    mode=max exports every intermediate layer (the dependency steps, not only the final
    image's), so a fresh runner with an empty daemon re-runs only what changed; image-manifest
    stores the cache as a plain OCI image manifest, which every registry accepts (ECR included);
    ignore-error: a cache that cannot be written (a registry that refuses the manifest) leaves
    the pushed image good, and the next build merely starts cold.
    """
    last = repository.rsplit("/", 1)[-1]
    if not repository or ":" in last or "@" in repository or repository != repository.strip():
        raise ConfigError(
            f"registry cache: {repository!r} is not a repository; give one without tag or digest, "
            f"e.g. ghcr.io/acme/trainer (the cache goes to ghcr.io/acme/trainer:{cache_tag('linux/amd64')})"
        )
    ref = f"{repository}:{tag}"
    export = f"type=registry,ref={ref},mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"
    return (f"type=registry,ref={ref}",), (export,)


def platform_cache_specs(repository: str, platforms: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(cache_from, cache_to) of cache="registry": one tag per platform (`cache_tag`), in the
    order of `platforms`; a build of one platform reads and writes only its own."""
    specs = [registry_cache_specs(repository, cache_tag(p)) for p in platforms]
    return tuple(s for f, _ in specs for s in f), tuple(s for _, t in specs for s in t)


def _cache_tag_of(spec: str) -> str:
    """The tag a cache spec's registry reference names ("" for none)."""
    fields = spec.split(",")
    ref = next((f.removeprefix("ref=") for f in fields if f.startswith("ref=")), "" if "=" in spec else spec)
    return ref.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]


def per_platform_cache(request: BuildRequest) -> bool:
    """Whether `request` builds several platforms and exports a registry cache per platform, which
    one solve cannot do: it writes one cache of every platform it built."""
    tags = {cache_tag(p) for p in request.platforms}
    return len(request.platforms) > 1 and any(_cache_tag_of(spec) in tags for spec in request.cache_to)


def for_platform(request: BuildRequest, platform: str) -> BuildRequest:
    """`request` for one of its platforms: its caches without the other platforms' cache tags."""
    others = {cache_tag(p) for p in request.platforms if p != platform}

    def keep(specs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(spec for spec in specs if _cache_tag_of(spec) not in others)

    return dataclasses.replace(
        request, platforms=(platform,), cache_from=keep(request.cache_from), cache_to=keep(request.cache_to)
    )


def load_one_platform(request: BuildRequest, progress: Progress, host: str) -> BuildRequest:
    """What every backend does when asked to load several platforms into a local image store
    that keeps one platform per tag: load `host` (the engine's own platform, else the first one
    asked for) and say which were not loaded, rather than fail."""
    chosen = host if host in request.platforms else request.platforms[0]
    left = [p for p in request.platforms if p != chosen]
    why = (
        f"loading {chosen} only; not loaded: {', '.join(left)} (this engine's image store keeps one platform per "
        "tag: push to a registry to keep them all, or turn on Docker's containerd image store)"
    )
    warnings.warn(why, UserWarning, stacklevel=3)
    progress(ProgressEvent("log", "", why, why))
    return dataclasses.replace(request, platforms=(chosen,))
