"""The local Docker engine backend: `docker buildx build` (`_buildx`) on the engine's own BuildKit.

Works with buildx's default `docker` driver: no builder container is created and nothing is
pulled for the builder itself; or hands its builds to a buildx builder made with `docker buildx
create` (`buildx_builder`, or BUILDX_BUILDER), such as a kubernetes-driver builder whose
replicas buildx balances itself. Several platforms are built in one build where the builder can,
else one build per platform joined by an image index (`_multiarch`); emulation for foreign
platforms is checked first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from functools import partial
from typing import ClassVar

from flyte_images._config import is_base_image_setting
from flyte_images._errors import (
    BaseImageNotFoundError,
    BuildError,
    ConfigError,
    EmulationUnavailableError,
    EngineUnavailableError,
    PushDeniedError,
    PushFailedError,
)
from flyte_images.builders import _buildx, _engine
from flyte_images.builders import _multiarch as multiarch
from flyte_images.builders.base import BuildRequest, BuildResult, Progress, check_compression, load_one_platform
from flyte_images.builders.output import BuildOutput

_MISSING_IMAGE = re.compile(r"no such (image|object)", re.I)
_NO_BUILDX = (
    "the docker buildx plugin is missing, and BuildKit builds need it: install it "
    "(Debian trixie or newer: apt-get install docker-buildx; Docker's packages: "
    "docker-buildx-plugin; or `bash fixtures/engine/setup.sh` in this project)"
)

_checked_engine = False


def check_engine() -> None:
    """Raise EngineUnavailableError saying exactly what is missing and how to get it."""
    global _checked_engine  # noqa: PLW0603 - probing once per process is enough
    if _checked_engine:
        return
    _buildx.check_cli(
        "the docker command is not installed; install Docker (Debian: apt-get install docker.io, "
        "or run `bash fixtures/engine/setup.sh` in this project as root)",
        _NO_BUILDX,
    )
    # The local engine is asked over its socket (a few ms) and the plugin found on disk; the
    # CLI is started only where that cannot tell (contexts, remote hosts) - see _engine.
    ping = _engine.api_get("/_ping")
    if ping is None or ping[0] != 200:
        info = _engine.cli("info", "--format", "{{.ServerVersion}}")
        if info.returncode != 0:
            said = info.stderr.strip()[-300:]
            if "permission denied" in said.lower():
                raise EngineUnavailableError(
                    "permission denied on the Docker socket: add your user to the docker group "
                    f"(usermod -aG docker $USER, then log in again) or run as root; docker said: {said}"
                )
            if _engine.host_setting():
                raise EngineUnavailableError(
                    f"no Docker daemon answers at {_engine.host_setting()}: fix DOCKER_HOST, or unset it to use "
                    f"the local engine; docker said: {said}"
                )
            raise EngineUnavailableError(
                "the Docker daemon does not answer: start it (systemctl start docker, or as root without "
                f"systemd: nohup dockerd >/var/log/dockerd.log 2>&1 &); docker said: {said}"
            )
    _checked_engine = True


class DockerBuilder:
    """Build with the local Docker engine's BuildKit. `platform_concurrency`: how many platforms
    build at once when each is built on its own (default FLYTE_IMAGES_PLATFORM_CONCURRENCY, else 2)."""

    name: ClassVar[str] = "docker"
    loads: ClassVar[bool] = True
    # gzip only: with the classic image store, buildx's `docker` driver hands the push to dockerd,
    # which writes Docker media types and gzip layers whatever the output asks (Docker 20.10:
    # `--output type=image,push=true,compression=zstd,force-compression=true` pushed tar.gzip).
    compressions: ClassVar[tuple[str, ...]] = ("gzip",)

    def __init__(self, platform_concurrency: int | None = None) -> None:
        self._concurrency = platform_concurrency

    @property
    def exports_cache(self) -> bool:
        """Whether the builder writes a registry layer cache: buildx's `docker` driver (the
        engine's own builder) imports one and never writes one; a builder of another driver
        (`buildx_builder`, BUILDX_BUILDER) does. Asked once per engine and builder."""
        return multiarch.engine_facts().driver != "docker"

    @property
    def multi_platform(self) -> bool:
        """What the engine's builder can do (asked once per engine and builder): another buildx
        driver than `docker`, or Docker's containerd image store. Otherwise `build` builds and
        pushes each platform on its own and writes the index itself."""
        return multiarch.engine_facts().builds_several

    def local_exists(self, reference: str) -> bool | None:
        with contextlib.suppress(EngineUnavailableError):
            found_here = _engine.image_exists(reference)
            if found_here is not None:
                return found_here
        if shutil.which("docker") is None:
            return None
        try:
            found = _engine.cli("image", "inspect", "--format", "{{.Id}}", reference)
        except subprocess.TimeoutExpired:
            return None
        if found.returncode == 0:
            return True
        # Any other failure (no daemon, no permission) means the engine could not be asked.
        return False if _MISSING_IMAGE.search(found.stderr) else None

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        check_compression(self, request.compression, request.push)
        check_engine()
        if len(request.platforms) <= 1:
            native = _native()
            if native is not None and request.platforms in ((), (native,)):
                return run_build(request, progress)  # the engine's own platform: nothing to decide
        facts = multiarch.engine_facts()
        if len(request.platforms) > 1 and not request.push and not facts.loads_several:
            request = load_one_platform(request, progress, facts.platform)
        multiarch.check_emulation(request, facts)
        if len(request.platforms) > 1 and request.push and not self.multi_platform:
            concurrency = multiarch.concurrency_setting(self._concurrency)
            return multiarch.build_split(request, progress, run_build, concurrency)
        return run_build(request, progress)


_NATIVE: dict[str | None, str | None] = {}  # engine socket -> its platform, asked once per process


def _native() -> str | None:
    """The platform the builder builds when none is named: the engine's own, when buildx uses
    the engine's builder (the `docker` driver); None when that is not known cheaply."""
    if not _engine.default_builder():
        return None
    where = _engine.local_socket()
    if where not in _NATIVE:
        found = None
        with contextlib.suppress(EngineUnavailableError):
            found = _engine.engine_platform()
        _NATIVE[where] = found
    return _NATIVE[where]


EXTRA_ARGS_ENV = "FLYTE_DOCKER_BUILD_EXTRA_ARGS"
# What this backend sets itself: changed, the build would report another image, place, digest
# or progress than the one it made.
_OWN_FLAGS = frozenset(
    {
        *("--tag", "--push", "--load", "--output", "--metadata-file", "--file", "--progress"),
        *("--iidfile", "--platform", "--builder", "--quiet", "--call", "--check", "--print"),
    }
)
_OWN_SHORT = "tofq"  # -t, -o, -f, -q


def extra_args() -> list[str]:
    """FLYTE_DOCKER_BUILD_EXTRA_ARGS as the Flyte SDK reads it: shell words added to `docker
    buildx build` (e.g. `--network host --add-host mirror:10.0.0.5`). They are not part of the
    identifier. Flags this backend sets itself are refused, naming the flag only (the value may
    hold a secret)."""
    text = os.environ.get(EXTRA_ARGS_ENV, "")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{EXTRA_ARGS_ENV} cannot be split into words ({exc}): quote it as a shell would") from None
    for word in words:
        flag = word.split("=", 1)[0]
        own = flag in _OWN_FLAGS or (len(word) > 1 and word[0] == "-" and word[1] != "-" and word[1] in _OWN_SHORT)
        if own:
            raise ConfigError(
                f"{EXTRA_ARGS_ENV} sets {flag[:2] if flag[1] != '-' else flag}, which flyte-images sets itself "
                "from the Image and the build options (tags, output, platforms, progress): remove it"
            )
        if "\0" in word:
            raise ConfigError(f"{EXTRA_ARGS_ENV} holds a NUL character: remove it")
    return words


def run_build(request: BuildRequest, progress: Progress, runs: _buildx.Runs | None = None) -> BuildResult:
    """One `docker buildx build` on the engine's builder; `runs`: the builds that stop together."""
    named = _engine.selected_builder()
    options = [*(["--builder", named] if named else []), *extra_args()]
    command = partial(_buildx.buildx_command, request, native=_native(), options=options)
    return _buildx.run(request, progress, command, partial(_explain, request=request), "docker buildx build", runs)


def _explain(stderr: str, output: BuildOutput, summary: str, request: BuildRequest) -> BuildError | None:
    """The typed error for a failed `docker buildx build`; `stderr` is already redacted."""
    if re.search(
        r"multi-platform build is not supported|multiple platforms feature is currently not supported", stderr, re.I
    ):
        return BuildError(
            f"the engine's builder cannot build several platforms at once ({', '.join(request.platforms)}): "
            "turn on Docker's containerd image store, use a docker-container or remote buildx builder, "
            "or build one platform at a time (platform=...)"
        )
    if "exec format error" in f"{stderr}\n{output.failed_error}":
        facts = multiarch.engine_facts()
        foreign = multiarch.foreign_platforms(request.platforms, facts.platform) or list(request.platforms)
        problem = f"a program of the image could not be executed ({summary})"
        return EmulationUnavailableError(multiarch.emulation_help(foreign[0], facts.platform, problem))
    if "buildx" in stderr and "is not a docker command" in stderr:
        return EngineUnavailableError(_NO_BUILDX)
    base = _buildx.BASE_METADATA.search(output.failed_step)
    if base:
        return _base_missing(base.group(2), base.group(1), output.failed_error or summary)
    step = output.failed_step
    pushing = request.push and (step.startswith(("exporting", "pushing")) or re.search(r"failed to push", stderr))
    if pushing and _buildx.DENIED.search(stderr):
        registry = request.tags[0].split("/", 1)[0]
        return PushDeniedError(
            f"built {request.tags[0]}, but the registry refused the push ({summary}); log in with "
            f"`docker login {registry}` or check that you may push to this repository, then build again"
        )
    if pushing:
        return PushFailedError(
            f"built {request.tags[0]}, but the push failed ({summary}); check that the registry is reachable "
            "and build again: the steps are cached, only the push runs again"
        )
    return None


def _base_missing(reference: str, platform: str | None, why: str) -> BaseImageNotFoundError:
    why = why.splitlines()[0]
    if platform is None:
        # FLYTE_IMAGES_BASE_IMAGE only sets the base of from_debian_base(install_flyte=False).
        setting = is_base_image_setting(reference)
        other = (
            "point FLYTE_IMAGES_BASE_IMAGE at an image you have" if setting else "start the image from a base you have"
        )
        return BaseImageNotFoundError(
            f"base image {reference} is not in the local engine and cannot be pulled ({why}); load it "
            f"(docker load / docker pull where a registry is reachable), or {other}"
        )
    # One platform of several: a local base only serves the platform it was made for.
    return BaseImageNotFoundError(
        f"base image {reference} is not in the local engine for {platform} and cannot be pulled ({why}). This "
        "engine keeps one platform per tag, so building several platforms needs a base from a registry that "
        "has each of them (push a multi-platform base there and use that reference), or build one platform at "
        "a time (platform=...)"
    )
