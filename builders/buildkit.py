"""The BuildKit daemon backend: builds on any buildkitd, local or remote, through buildx's `remote` driver.

    FLYTE_IMAGES_BUILDKIT_ADDR=tcp://buildkitd.ci:1234  (or unix:///run/buildkit/buildkitd.sock)
    FLYTE_IMAGES_BUILDKIT_CA / _CERT / _KEY / _SERVER_NAME   client TLS for a tcp:// address

buildx rather than `buildctl`: it needs only the docker CLI and its buildx plugin, which the docker
backend needs already (and no Docker daemon, unless the image is loaded), and the build is the same
`docker buildx build` (`_buildx`). buildx reports a daemon it cannot reach, or a TLS handshake that
fails, only as "context deadline exceeded" after 20 s, so `probe` connects first, as buildx will,
and raises EngineUnavailableError or BuilderTLSError saying what to fix.

buildx keeps one builder per daemon address and TLS files (`flyte-images-<hash>`, created on first
use; nothing runs). Provenance attestations are off, so a push is a plain OCI image manifest, or an
OCI index of exactly the platforms' manifests. Several platforms are built in one solve by the
daemon (foreign ones through QEMU on its host); loading keeps one (base.load_one_platform).

Several daemons (FLYTE_IMAGES_BUILDKIT_NODES, or [[buildkit_nodes]] in the config file) make a
pool: each build goes to one node, chosen and moved on failure as builders.pool describes. A
pushed image of several platforms is built there one platform at a time, each on a node that
builds that platform natively, and joined by an index (`_multiarch.build_split`); so it is on
one daemon when each platform exports its own registry cache (`base.per_platform_cache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import threading
import time
from functools import partial
from pathlib import Path
from typing import ClassVar

from flyte_images import _config, _interrupt
from flyte_images._config import BuildkitSettings, is_base_image_setting
from flyte_images._errors import (
    BaseImageNotFoundError,
    BuildError,
    ConfigError,
    EngineUnavailableError,
    PlatformNotSupportedError,
    PushDeniedError,
)
from flyte_images.builders import _buildx, _engine, _multiarch, pool
from flyte_images.builders._buildx import Runs
from flyte_images.builders._probe import check_settings, probe
from flyte_images.builders.base import (
    BuildRequest,
    BuildResult,
    Progress,
    ProgressEvent,
    load_one_platform,
    per_platform_cache,
)
from flyte_images.builders.docker import DockerBuilder, check_engine
from flyte_images.builders.output import BuildOutput

_STEP_PLATFORM = re.compile(r"^\[(\S+/\S+) ")  # "[linux/arm64 2/3] RUN ..." in a multi-platform build

_created: set[tuple[str, str]] = set()  # (builder name, DOCKER_CONFIG) made by this process
_lock = threading.Lock()


class BuildkitBuilder:
    """Build on a BuildKit daemon at FLYTE_IMAGES_BUILDKIT_ADDR (`docker buildx`, remote driver)."""

    name: ClassVar[str] = "buildkit"
    exports_cache: ClassVar[bool] = True  # a registry cache can be written, not only read
    multi_platform: ClassVar[bool] = True  # every platform pushed as one index (see the module)
    loads: ClassVar[bool] = True  # through the local Docker engine
    compressions: ClassVar[tuple[str, ...]] = ("gzip", "zstd")  # its own exporter pushes zstd layers

    def __init__(self, settings: BuildkitSettings | None = None, nodes: tuple[pool.Node, ...] | None = None) -> None:
        """`settings`: the daemon's address and TLS files; `nodes`: a pool of daemons instead
        (builders.pool). Neither: read at each build (FLYTE_IMAGES_BUILDKIT_NODES or the config
        file's [[buildkit_nodes]] for a pool, else the FLYTE_IMAGES_BUILDKIT_* variables,
        init(...), the config file)."""
        self._settings = settings
        self._nodes = nodes

    @property
    def settings(self) -> BuildkitSettings:
        return self._settings or _config.configured_buildkit()

    @property
    def nodes(self) -> tuple[pool.Node, ...] | None:
        """The pool's nodes, or None when the backend builds on one daemon (`settings`)."""
        if self._nodes is not None or self._settings is not None:
            return self._nodes
        configured = _config.configured_buildkit_nodes()
        if configured is None:
            return None
        return pool.parse_nodes(*configured, _config.configured_buildkit())

    def diagnose(self) -> list[str]:
        """What stops a build here, one line a daemon (the pool's nodes, or the one daemon): for
        `flyte-images doctor`. Empty when every daemon answers as buildx will reach it."""
        nodes = self.nodes
        daemons = [(node.settings, "a node of buildkit_nodes") for node in nodes] if nodes else [(self.settings, None)]
        found = []
        for settings, origin in daemons:
            try:
                probe(settings, origin=origin)
            except (EngineUnavailableError, ConfigError) as exc:
                found.append(str(exc))
        return found

    def local_exists(self, reference: str) -> bool | None:
        # Built images are loaded into the local Docker engine, so that is the store asked.
        return DockerBuilder().local_exists(reference)

    def routing(self, reference: str, platforms: tuple[str, ...], push: bool) -> dict[str, str]:
        """Where a build of `reference` would run, said before anything is asked of a daemon:
        platform -> daemon address. On a pool, each job's first choice (a pushed image of several
        platforms is one job per platform), "(emulated)" where no node declares the platform;
        a node that is down when the build starts passes its job to the next in the ranking."""
        nodes = self.nodes
        if nodes is None:
            return dict.fromkeys(platforms, self.settings.addr)
        repository = pool.repository_of(reference)
        jobs = [(p,) for p in platforms] if push and len(platforms) > 1 else [platforms]
        where: dict[str, str] = {}
        for job in jobs:
            able, emulated = pool.candidates(nodes, job, pool.POOL.reported)
            first = pool.rank(able, repository, job)[0].address + (" (emulated)" if emulated else "")
            where.update(dict.fromkeys(job, first))
        return where

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        nodes = self.nodes
        settings = check_settings(self.settings) if nodes is None else None
        if len(request.platforms) > 1 and not request.push:
            request = load_one_platform(request, progress, _multiarch.engine_facts().platform)
        if not request.push:
            check_engine()  # loading needs the Docker daemon as well
        else:  # the docker CLI and its buildx plugin drive the daemon: no Docker daemon needed
            _buildx.check_cli(
                "the buildkit backend drives buildkitd through `docker buildx`, and the docker command is not "
                "installed: install the docker CLI and the buildx plugin (Debian: docker-cli or docker.io, "
                "and docker-buildx from trixie on; Docker's packages: docker-ce-cli, docker-buildx-plugin)",
                "the docker buildx plugin is missing, and the buildkit backend drives buildkitd through it: "
                "install it (Debian trixie or newer: apt-get install docker-buildx; Docker's packages: "
                "docker-buildx-plugin)",
            )
        if settings is None:
            assert nodes is not None
            return _on_pool(request, progress, nodes)
        probe(settings)
        builder = ensure_builder(settings)
        if request.push and per_platform_cache(request):
            # One solve would export one cache holding every platform: each platform is built on
            # its own (at once, on this daemon) to export its own.
            def one(part: BuildRequest, sink: Progress, runs: Runs | None) -> BuildResult:
                return _run(part, sink, settings, builder, runs)

            return _multiarch.build_split(request, progress, one, len(request.platforms), local_tags=False)
        return _run(request, progress, settings, builder)


def _say(progress: Progress, text: str) -> None:
    progress(ProgressEvent("log", "", text, text))


def _on_pool(request: BuildRequest, progress: Progress, nodes: tuple[pool.Node, ...]) -> BuildResult:
    """Build on the pool's node for this job (builders.pool), moving to the next in its ranking
    when one cannot be reached or goes away during the build; a failure of the build itself
    (a step, a push) is raised as on one daemon."""
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        pool.POOL.wake()

    with _interrupt.on_stop(stop):
        if request.push and len(request.platforms) > 1:
            # Each platform is its own job, routed to a node that builds it natively.
            def one(part: BuildRequest, sink: Progress, runs: Runs | None) -> BuildResult:
                return _route(part, sink, nodes, stopped, runs)

            concurrency = len(request.platforms)  # the nodes' build slots are the limit
            return _multiarch.build_split(request, progress, one, concurrency, local_tags=False, stop=stop)
        return _route(request, progress, nodes, stopped)


def _route(
    request: BuildRequest,
    progress: Progress,
    nodes: tuple[pool.Node, ...],
    stopped: threading.Event,
    runs: Runs | None = None,
) -> BuildResult:
    repository = pool.repository_of(request.tags[0])
    tried: list[tuple[pool.Node, str]] = []
    waited = 0.0
    while True:
        able, emulated = pool.candidates(nodes, request.platforms, pool.POOL.reported)
        ranking = pool.rank(able, repository, request.platforms)
        left = [n for n in ranking if n not in {t for t, _ in tried}]
        if not left:
            raise EngineUnavailableError(pool.no_node_error(repository, request.platforms, tried))
        asked = time.monotonic()
        with pool.POOL.slot(left, stopped) as (node, why):
            waited += time.monotonic() - asked
            where = f"buildkit node {node.address}"
            try:
                probe(node.settings, origin=f"a node of {_config.NODES_KEY}")
                builder = ensure_builder(node.settings)
            except EngineUnavailableError as exc:  # BuilderTLSError too
                pool.POOL.mark_down(node, str(exc))
                tried.append((node, str(exc)))
                _say(progress, f"{where} cannot be used ({exc}); trying the next node")
                continue
            pool.POOL.mark_up(node)
            if not node.platforms and pool.POOL.reported(node) is None:
                reported = daemon_platforms(builder)  # [] when it cannot tell: then it may build anything
                pool.POOL.report(node, reported)
                if reported and not emulated and not all(p in reported for p in request.platforms):
                    continue  # its daemon does not build the platform: ranked again without it
            what = ", ".join(request.platforms) or "the image"
            note = f"; no node declares {what}, so it is emulated" if emulated else ""
            place = f"choice {ranking.index(node) + 1} of {len(ranking)} for {repository}"
            _say(progress, f"building {what} on {where} ({place}: {why}{note}; waited {waited:.1f} s for a slot)")
            try:
                built = _run(request, progress, node.settings, builder, runs)
                return dataclasses.replace(built, waited={p: round(waited, 3) for p in request.platforms})
            except BuildError:
                try:
                    probe(node.settings, origin=f"a node of {_config.NODES_KEY}")
                except EngineUnavailableError as gone:
                    reason = f"went away during the build ({gone})"
                    pool.POOL.mark_down(node, reason)
                    tried.append((node, reason))
                    _say(progress, f"{where} {reason}; moving the build to the next node")
                    continue
                raise


def builder_name(settings: BuildkitSettings) -> str:
    """The buildx builder for these settings: the same daemon and files always get the same one."""
    key = json.dumps([settings.addr, sorted(_driver_options(settings).items())])
    return f"flyte-images-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _driver_options(settings: BuildkitSettings) -> dict[str, str]:
    if not settings.addr.startswith("tcp://"):
        return {}  # buildkitd serves TLS on TCP listeners only
    paths = {"cacert": settings.ca, "cert": settings.cert, "key": settings.key}
    options = {k: str(Path(v).absolute()) for k, v in paths.items() if v}
    if settings.server_name:
        options["servername"] = settings.server_name
    return options


def ensure_builder(settings: BuildkitSettings) -> str:
    """Create the remote-driver builder for `settings` once (nothing runs; buildx stores it)."""
    name = builder_name(settings)
    key = (name, os.environ.get("DOCKER_CONFIG", ""))
    with _lock:
        if key in _created:
            return name
        command = ["buildx", "create", "--name", name, "--driver", "remote"]
        for option, value in _driver_options(settings).items():
            command += ["--driver-opt", f"{option}={value}"]
        made = _engine.cli(*command, settings.addr)
        # Another process may have made it first: same name, same settings.
        if made.returncode != 0 and "existing instance" not in made.stderr:
            raise EngineUnavailableError(
                f"docker buildx could not set up a builder for {settings.addr}: {made.stderr.strip()[-300:]}"
            )
        _created.add(key)
    return name


def _run(
    request: BuildRequest, progress: Progress, settings: BuildkitSettings, builder: str, runs: Runs | None = None
) -> BuildResult:
    """One `docker buildx build` on the daemon; the result names it as each platform's node."""
    options = ["--builder", builder, "--provenance=false"]
    if request.push:
        # OCI media types: an OCI image manifest for one platform, an OCI index of the platforms' manifests for several.
        options += ["--output", "type=registry,oci-mediatypes=true"]
    command = partial(_buildx.buildx_command, request, options=options)
    explain = partial(_explain, request=request, settings=settings, builder=builder)
    built = _buildx.run(request, progress, command, explain, f"the build on buildkitd at {settings.addr}", runs)
    return dataclasses.replace(built, nodes={p: settings.addr for p in request.platforms})


def _explain(
    stderr: str, output: BuildOutput, summary: str, request: BuildRequest, settings: BuildkitSettings, builder: str
) -> BuildError | None:
    """The typed error for a failed build on the daemon; `stderr` is already redacted."""
    daemon = f"buildkitd at {settings.addr}"
    if "waiting for connection" in output.failed_step:
        return EngineUnavailableError(
            f"{daemon} did not answer docker buildx ({summary}); check that it runs and, for tcp://, "
            "that FLYTE_IMAGES_BUILDKIT_CA/_CERT/_KEY match its TLS setup"
        )
    base = _buildx.BASE_METADATA.search(output.failed_step)
    if base:
        reference = base.group(2)
        reason = output.failed_error.splitlines()[0] if output.failed_error else summary
        if "no match for platform" in reason:
            return BaseImageNotFoundError(
                f"base image {reference} has no variant for {', '.join(request.platforms) or 'this platform'} "
                f"({reason}); use a base image published for every platform you build"
            )
        return BaseImageNotFoundError(
            f"base image {reference} cannot be pulled by {daemon} ({reason}). The daemon pulls base "
            "images itself and does not see this machine's Docker images: push the base to a registry the "
            "daemon reaches (or configure one as a mirror in its buildkitd.toml)"
            + (", or point FLYTE_IMAGES_BASE_IMAGE at such an image" if is_base_image_setting(reference) else "")
        )
    if "exec format error" in f"{output.tail()}\n{output.failed_error}":
        return _platform_error(output, request, daemon, builder)
    if request.push and _buildx.DENIED.search(stderr):
        registry = request.tags[0].split("/", 1)[0]
        return PushDeniedError(
            f"the registry refused the push of {request.tags[0]} ({summary}); log in with "
            f"`docker login {registry}` (buildx passes those credentials to the daemon) or check that "
            "you may push to this repository"
        )
    return None


def _platform_error(output: BuildOutput, request: BuildRequest, daemon: str, builder: str) -> BuildError:
    step = output.failed_step
    in_title = _STEP_PLATFORM.match(step)
    platform = in_title.group(1) if in_title else (request.platforms[0] if request.platforms else "its platform")
    native = daemon_platforms(builder)
    if platform in native:
        # The daemon can run the platform, so the program itself is for another one (or the
        # emulator registered for it is broken); the emulation advice still applies to the latter.
        problem = f"{daemon} lists {platform}, so the program is for another architecture or its emulator fails"
    else:
        has = f" (it runs {', '.join(native)})" if native else ""
        problem = f"{daemon} cannot run {platform} programs{has}"
    return PlatformNotSupportedError(
        f"step {step} could not start its program for {platform} (exec format error): {problem}. "
        "Add emulation on the daemon's host as root: install "
        "qemu-user-static and register it with binfmt_misc (Debian: apt-get install qemu-user-static "
        "binfmt-support; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc if it is not mounted; "
        f"update-binfmts --enable), then restart buildkitd; or build {platform} on a native builder",
        step=step,
        exit_code=output.exit_code,
        tail=output.tail(),
    )


def daemon_platforms(builder: str) -> list[str]:
    """The platforms the daemon says it can run (native and emulated), or [] when it cannot tell."""
    try:
        shown = _engine.cli("buildx", "inspect", builder)
    except (OSError, subprocess.SubprocessError):
        return []
    listed = re.findall(r"^Platforms:\s*(.*)$", shown.stdout, re.MULTILINE) if shown.returncode == 0 else []
    return [p.strip().rstrip("*") for line in listed for p in line.split(",") if p.strip()]
