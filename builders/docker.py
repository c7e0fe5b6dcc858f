"""The local Docker engine backend: `docker buildx build` with BuildKit, via python-on-whales.

Works with buildx's default `docker` driver, which uses the engine's own BuildKit: no builder
container is created and nothing is pulled for the builder itself. Secrets are passed by
environment variable name or file path (`--secret id=...,env=...`), so their values never pass
through a command line. Build output goes through the shared `BuildOutput`: redacted, parsed
into progress events, and remembered to explain a failure with a typed error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

from flyte_images._errors import (
    BaseImageNotFoundError,
    BuildError,
    EngineUnavailableError,
    PushDeniedError,
)
from flyte_images.builders.base import BuildRequest, BuildResult, Progress
from flyte_images.builders.output import BuildOutput

_BASE_METADATA = re.compile(r"\[internal\] load metadata for (\S+)")
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
    info = _probe(["docker", "info", "--format", "{{.ServerVersion}}"])
    if info.returncode != 0:
        raise EngineUnavailableError(
            "the Docker daemon does not answer: start it (systemctl start docker, or as root without "
            f"systemd: nohup dockerd >/var/log/dockerd.log 2>&1 &); docker said: {info.stderr.strip()[-300:]}"
        )
    buildx = _probe(["docker", "buildx", "version"])
    if buildx.returncode != 0:
        raise EngineUnavailableError(_NO_BUILDX)
    _checked_engine = True


class DockerBuilder:
    """Build with the local Docker engine's BuildKit (`docker buildx build`, docker driver)."""

    name: ClassVar[str] = "docker"

    def local_exists(self, reference: str) -> bool | None:
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
        from python_on_whales import docker
        from python_on_whales.exceptions import DockerException

        if len(request.platforms) > 1 and not request.push:
            raise BuildError(
                f"cannot load an image for several platforms ({', '.join(request.platforms)}) into the "
                "local engine; push it to a registry (give the image a registry) or build one platform"
            )
        output = BuildOutput(request.redact, progress)
        with tempfile.TemporaryDirectory(prefix="flyte-images-meta-") as meta_dir:
            metadata = Path(meta_dir) / "metadata.json"
            try:
                stream = docker.buildx.build(
                    context_path=request.context,
                    file=request.dockerfile,
                    tags=list(request.tags),
                    platforms=list(request.platforms) or None,
                    load=not request.push,
                    push=request.push,
                    secrets=[s.buildkit_spec() for s in request.secrets],
                    cache_from=[cache_spec(c) for c in request.cache_from] or None,
                    cache_to=cache_spec(request.cache_to[0]) if request.cache_to else None,
                    labels=dict(request.labels),
                    progress="plain",
                    metadata_file=metadata,
                    stream_logs=True,
                )
                for raw in stream:  # type: ignore[union-attr]
                    output.feed(raw)
            except DockerException as exc:
                stderr = output.redact(str(getattr(exc, "stderr", "") or "") or str(exc))
                raise _explain(stderr, output, request) from None
            digest = None
            if metadata.is_file():
                digest = json.loads(metadata.read_text()).get("containerimage.digest")
        return BuildResult(reference=request.tags[0], digest=digest)


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
    if "buildx" in stderr and "is not a docker command" in stderr:
        return EngineUnavailableError(_NO_BUILDX)
    base = _BASE_METADATA.search(output.failed_step)
    if base:
        return BaseImageNotFoundError(
            f"base image {base.group(1)} is not in the local engine and cannot be pulled "
            f"({output.failed_error.splitlines()[0] if output.failed_error else summary}); "
            "load it (docker load / docker pull where a registry is reachable), or point "
            "FLYTE_IMAGES_BASE_IMAGE at an image you have"
        )
    if request.push and re.search(r"denied|unauthorized|authentication required|forbidden", stderr, re.I):
        registry = request.tags[0].split("/", 1)[0]
        return PushDeniedError(
            f"the registry refused the push of {request.tags[0]} ({summary}); log in with "
            f"`docker login {registry}` or check that you may push to this repository"
        )
    if not output.failed_step and output.exit_code is None:
        return BuildError(f"docker buildx build failed: {summary}")  # before any step ran
    return output.step_failed(summary)
