"""The local Docker engine backend: `docker buildx build` with BuildKit.

Works with buildx's default `docker` driver, which uses the engine's own BuildKit: no builder
container is created and nothing is pulled for the builder itself. Several platforms are built
in one build where the builder can, else one build per platform joined by an image index
(builders/_multiarch.py); emulation for foreign platforms is checked first. Secrets are passed by
environment variable name or file path (`--secret id=...,env=...`), so their values never pass
through a command line. Build output goes through the shared `BuildOutput`: redacted, parsed
into progress events, and remembered to explain a failure with a typed error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from typing import ClassVar

from flyte_images import _interrupt
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
from flyte_images.builders import _engine
from flyte_images.builders import _multiarch as multiarch
from flyte_images.builders.base import BuildRequest, BuildResult, Progress
from flyte_images.builders.output import BuildOutput

# `[internal]`, or `[linux/arm64 internal]` in a build of several platforms.
_BASE_METADATA = re.compile(r"\[(?:(\S+) )?internal\] load metadata for (\S+)")
_TAIL = 400  # lines of output kept to explain a failure
_MISSING_IMAGE = re.compile(r"no such (image|object)", re.I)

_NO_BUILDX = (
    "the docker buildx plugin is missing, and BuildKit builds need it: install it "
    "(Debian trixie or newer: apt-get install docker-buildx; Docker's packages: "
    "docker-buildx-plugin; or `bash fixtures/engine/setup.sh` in this project)"
)

_checked_engine = False


def cache_spec(text: str) -> dict[str, str]:
    """BuildKit's `type=registry,ref=...` (or a bare image reference) as a mapping."""
    if "=" not in text:
        return {"type": "registry", "ref": text}
    return dict(part.split("=", 1) for part in text.split(",") if part)


def _probe(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


def check_engine() -> None:
    """Raise EngineUnavailableError saying exactly what is missing and how to get it."""
    global _checked_engine  # noqa: PLW0603 - probing once per process is enough
    if _checked_engine:
        return
    if shutil.which("docker") is None:
        raise EngineUnavailableError(
            "the docker command is not installed; install Docker (Debian: apt-get install docker.io, "
            "or run `bash fixtures/engine/setup.sh` in this project as root)"
        )
    # The local engine is asked over its socket (a few ms) and the plugin found on disk; the
    # CLI is started only where that cannot tell (contexts, remote hosts) - see _engine.
    ping = _engine.api_get("/_ping")
    if ping is None or ping[0] != 200:
        info = _probe(["docker", "info", "--format", "{{.ServerVersion}}"])
        if info.returncode != 0:
            stderr = info.stderr.strip()
            if "permission denied" in stderr.lower():
                raise EngineUnavailableError(
                    "permission denied on the Docker socket: add your user to the docker group "
                    f"(usermod -aG docker $USER, then log in again) or run as root; docker said: {stderr[-300:]}"
                )
            if _engine.host_setting():
                raise EngineUnavailableError(
                    f"no Docker daemon answers at {_engine.host_setting()}: fix DOCKER_HOST, or unset it to use "
                    f"the local engine; docker said: {stderr[-300:]}"
                )
            raise EngineUnavailableError(
                "the Docker daemon does not answer: start it (systemctl start docker, or as root without "
                f"systemd: nohup dockerd >/var/log/dockerd.log 2>&1 &); docker said: {stderr[-300:]}"
            )
    if not _engine.buildx_installed() and _probe(["docker", "buildx", "version"]).returncode != 0:
        raise EngineUnavailableError(_NO_BUILDX)
    _checked_engine = True


class DockerBuilder:
    """Build with the local Docker engine's BuildKit (`docker buildx build`, docker driver).

    Several platforms: one build where the builder can (builders/_multiarch.py), otherwise one
    per platform, `platform_concurrency` at a time (default FLYTE_IMAGES_PLATFORM_CONCURRENCY,
    else 2), pushed and joined by an image index.
    """

    name: ClassVar[str] = "docker"
    exports_cache: ClassVar[bool] = False  # buildx's `docker` driver imports a registry cache, never writes one
    loads: ClassVar[bool] = True

    def __init__(self, platform_concurrency: int | None = None) -> None:
        self._concurrency = platform_concurrency

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
            found = _probe(["docker", "image", "inspect", "--format", "{{.Id}}", reference])
        except subprocess.TimeoutExpired:
            return None
        if found.returncode == 0:
            return True
        # Any other failure (no daemon, no permission) means the engine could not be asked.
        return False if _MISSING_IMAGE.search(found.stderr) else None

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        check_engine()
        if len(request.platforms) <= 1:
            native = _native()
            if native is not None and request.platforms in ((), (native,)):
                return run_build(request, progress)  # the engine's own platform: nothing to decide
        facts = multiarch.engine_facts()
        if len(request.platforms) > 1 and not request.push and not facts.loads_several:
            request = multiarch.keep_one_platform(request, progress, facts)
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


def buildx_command(request: BuildRequest, metadata: Path, native: str | None = None) -> list[str]:
    """The `docker buildx build` command line for `request` (no secret value is ever on it:
    secrets are named by environment variable or file). `native`: the platform the builder
    builds when none is named (the engine's own, on the `docker` driver)."""
    command = ["docker", "buildx", "build", "--progress", "plain", "--file", str(request.dockerfile)]
    command += ["--metadata-file", str(metadata), "--push" if request.push else "--load"]
    for tag in request.tags:
        command += ["--tag", tag]
    # Naming the engine's own platform builds the same image, but costs the docker driver
    # ~50 ms a build (measured: `--platform linux/amd64` on an amd64 engine, 0.66 -> 0.71 s).
    if request.platforms and request.platforms != (native,):
        command += ["--platform", ",".join(request.platforms)]
    for secret in request.secrets:
        command += ["--secret", secret.buildkit_spec()]
    for source in request.cache_from:
        command += ["--cache-from", _spec_text(cache_spec(source))]
    if request.cache_to:
        command += ["--cache-to", _spec_text(cache_spec(request.cache_to[0]))]
    for key, value in request.labels.items():
        command += ["--label", f"{key}={value}"]
    return [*command, str(request.context)]


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


def _spec_text(spec: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in spec.items())


def run_build(request: BuildRequest, progress: Progress, runs: multiarch.Runs | None = None) -> BuildResult:
    """One `docker buildx build`; every line goes through one BuildOutput (redacted, parsed).

    Run as a plain process rather than through a library so that a build can be stopped
    (`runs`): when one platform of several fails, the others are cancelled."""
    output = BuildOutput(request.redact, progress)
    platform = request.platforms[0] if len(request.platforms) == 1 and runs is not None else None
    with tempfile.TemporaryDirectory(prefix="flyte-images-meta-") as meta_dir:
        metadata = Path(meta_dir) / "metadata.json"
        command = buildx_command(request, metadata, _native())
        command[-1:-1] = extra_args()
        plugin = _engine.buildx_plugin()
        if plugin is not None:
            command = [plugin, *command[2:]]  # `docker-buildx build ...` for `docker buildx build ...`
        returncode, tail = _stream(command, output, platform, runs)
        if returncode != 0:
            stopped = runs is not None and runs.stopped
            text = "build stopped: another platform's build failed" if stopped else "".join(tail)
            raise _explain(output.redact(text), output, request)
        digest = json.loads(metadata.read_text()).get("containerimage.digest") if metadata.is_file() else None
    return BuildResult(reference=request.tags[0], digest=digest)


def _stream(
    command: list[str], output: BuildOutput, platform: str | None, runs: multiarch.Runs | None
) -> tuple[int, deque[str]]:
    """Run `command`, feeding each line to `output`; its exit status and last lines."""
    tail: deque[str] = deque(maxlen=_TAIL)
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
        )
    except OSError as exc:
        raise EngineUnavailableError(f"docker could not be run ({exc.strerror}); is it installed?") from None
    if runs is not None:
        runs.add(process)
    try:
        with _interrupt.tracked(process):
            assert process.stdout is not None
            for raw in process.stdout:
                line = multiarch.platform_titles(raw, platform) if platform else raw
                tail.append(line)
                output.feed(line)
            return process.wait(), tail
    except BaseException:
        process.terminate()  # Ctrl-C or a failing progress sink: no build left running
        raise
    finally:
        process.wait()
        if runs is not None:
            runs.discard(process)


def _explain(stderr: str, output: BuildOutput, request: BuildRequest) -> BuildError:
    """The typed error for a failed `docker buildx build`; `stderr` is already redacted."""
    last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["docker buildx build failed"]
    summary = last[0][-500:]
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
    base = _BASE_METADATA.search(output.failed_step)
    if base:
        return _base_missing(base.group(2), base.group(1), output.failed_error or summary)
    step = output.failed_step
    pushing = request.push and (step.startswith(("exporting", "pushing")) or re.search(r"failed to push", stderr))
    if pushing and re.search(r"denied|unauthorized|authentication required|forbidden", stderr, re.I):
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
    if not output.failed_step and output.exit_code is None:
        return BuildError(f"docker buildx build failed: {summary}")  # before any step ran
    return output.step_failed(summary)


def _other_base(reference: str) -> str:
    """How to build on another base instead: FLYTE_IMAGES_BASE_IMAGE only sets the base of
    `from_debian_base(install_flyte=False)`, not flyte's published image or a base named in code."""
    if is_base_image_setting(reference):
        return ", or point FLYTE_IMAGES_BASE_IMAGE at an image you have"
    return ", or start the image from a base you have"


def _base_missing(reference: str, platform: str | None, why: str) -> BaseImageNotFoundError:
    why = why.splitlines()[0]
    if platform is None:
        return BaseImageNotFoundError(
            f"base image {reference} is not in the local engine and cannot be pulled ({why}); load it "
            f"(docker load / docker pull where a registry is reachable){_other_base(reference)}"
        )
    # One platform of several: a local base only serves the platform it was made for.
    return BaseImageNotFoundError(
        f"base image {reference} is not in the local engine for {platform} and cannot be pulled ({why}). This "
        "engine keeps one platform per tag, so building several platforms needs a base from a registry that "
        "has each of them (push a multi-platform base there and use that reference), or build one platform at "
        "a time (platform=...)"
    )
