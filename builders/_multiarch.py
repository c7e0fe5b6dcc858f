"""Several platforms on the local Docker engine, whatever it can do natively (`EngineFacts`).

- One build for every platform where the builder can (buildx drivers other than `docker`, or the
  `docker` driver on Docker's containerd image store): BuildKit's own multi-platform push.
- Otherwise (the classic image store) each platform is built on its own, `concurrency` at a
  time, and pushed under its own tag (`<tag>-<os>-<arch>`), then one OCI image index listing
  them is PUT under the tag. The tag exists only once the index is written, so an interrupted
  build is "missing" and the next one reuses each platform already pushed whose config carries
  the same identity label.
- Foreign platforms need an emulator for RUN steps: on an engine on this machine, the kernel's
  binfmt_misc handlers are checked first (`check_emulation`), and a missing one is an
  `EmulationUnavailableError` that says how to enable it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flyte_images._errors import (
    BuildError,
    ConfigError,
    EmulationUnavailableError,
    EngineUnavailableError,
    PartialPushError,
)
from flyte_images._interrupt import run_coroutine
from flyte_images.builders import _engine
from flyte_images.builders._buildx import Runs
from flyte_images.builders.base import (
    IDENTITY_LABEL,
    BuildRequest,
    BuildResult,
    Progress,
    ProgressEvent,
    for_platform,
)

CONCURRENCY_ENV = "FLYTE_IMAGES_PLATFORM_CONCURRENCY"
DEFAULT_CONCURRENCY = 2
SKIP_EMULATION_CHECK_ENV = "FLYTE_IMAGES_SKIP_EMULATION_CHECK"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# Docker's architecture names as the kernel (`uname -m`) and QEMU call them.
_MACHINE = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386"}
_QEMU = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el", "mips64": "mips64"}  # fmt: skip
# What a CPU runs without an emulator (32-bit arm on arm64 is left to the build to find out:
# some arm64 CPUs run it, some do not, and a wrong refusal would block a good build).
_NATIVE = {"amd64": {"amd64", "386"}, "arm64": {"arm64", "arm"}}
_RUN = re.compile(r"^\s*RUN\s", re.IGNORECASE | re.MULTILINE)

Run = Callable[[BuildRequest, Progress, Runs | None], BuildResult]  # docker.run_build


# ----- what the engine can do ----------------------------------------------------------------


@dataclass(frozen=True)
class EngineFacts:
    platform: str  # the engine's own, e.g. "linux/amd64"
    driver: str  # the buildx driver of the builder in use: docker, docker-container, kubernetes, remote
    containerd_store: bool  # Docker's containerd image store (keeps several platforms per tag)
    local: bool  # the engine runs on this machine, so its kernel's binfmt_misc can be read here
    desktop: bool  # Docker Desktop, whose VM brings its own emulators

    @property
    def builds_several(self) -> bool:
        return self.driver != "docker" or self.containerd_store

    @property
    def loads_several(self) -> bool:
        return self.driver == "docker" and self.containerd_store


_facts: dict[tuple[str, ...], EngineFacts] = {}
# A probe that fails (no docker, a timeout, odd output) leaves the default in place.
_PROBE_ERRORS = (OSError, subprocess.SubprocessError, ValueError)


def engine_facts() -> EngineFacts:
    """What the current engine and buildx builder can do; probed once per engine and builder."""
    named = _engine.selected_builder()
    key = (*(os.environ.get(k, "") for k in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG")), named or "")
    if key not in _facts:
        _facts[key] = _probe_facts(named)
    return _facts[key]


def _probe_facts(named: str | None = None) -> EngineFacts:
    """Anything that cannot be read counts as the least capable engine (the classic store and
    the `docker` driver): one platform per build works on every engine."""
    info: dict[str, object] = {}
    with contextlib.suppress(*_PROBE_ERRORS, EngineUnavailableError):
        info = _engine.engine_info() or {}  # over the socket: no CLI process
    if not info:
        with contextlib.suppress(*_PROBE_ERRORS):
            done = _engine.cli("info", "--format", "{{json .}}")
            loaded = json.loads(done.stdout) if done.returncode == 0 else {}
            info = loaded if isinstance(loaded, dict) else {}
    driver = "docker"
    if not _engine.default_builder():
        with contextlib.suppress(*_PROBE_ERRORS):
            done = _engine.cli("buildx", "inspect", *([named] if named else []))
            found = re.search(r"^Driver:\s*(\S+)", done.stdout, re.MULTILINE)
            driver = found.group(1) if done.returncode == 0 and found else "docker"
    machine = str(info.get("Architecture", "") or os.uname().machine)
    status = json.dumps(info.get("DriverStatus") or [])
    return EngineFacts(
        platform=f"linux/{_MACHINE.get(machine, machine)}",
        driver=driver,
        containerd_store="io.containerd.snapshotter" in status,
        local=sys.platform == "linux" and info.get("Name") == socket.gethostname(),
        desktop="docker desktop" in str(info.get("OperatingSystem", "")).lower(),
    )


# ----- emulation -----------------------------------------------------------------------------


def _arch(platform: str) -> str:
    return platform.split("/")[1] if "/" in platform else platform


def foreign_platforms(platforms: tuple[str, ...], host: str) -> list[str]:
    """The platforms whose programs the engine's CPU cannot run by itself."""
    native = _NATIVE.get(_arch(host), {_arch(host)})
    return [p for p in platforms if _arch(p) not in native]


def check_emulation(request: BuildRequest, facts: EngineFacts) -> None:
    """Raise EmulationUnavailableError before building when a foreign platform's RUN steps
    cannot execute. Only where it can be known: an engine on this machine (a remote engine's
    kernel cannot be read from here; Docker Desktop brings emulators), a Dockerfile with RUN."""
    if os.environ.get(SKIP_EMULATION_CHECK_ENV) or facts.desktop or not facts.local:
        return
    foreign = foreign_platforms(request.platforms, facts.platform)
    try:
        has_run = bool(foreign) and _RUN.search(request.dockerfile.read_text(errors="replace")) is not None
    except OSError:
        has_run = True  # cannot tell: check, rather than let the build fail half way
    for platform in foreign if has_run else []:
        problem = binfmt_problem(platform)
        if problem:
            raise EmulationUnavailableError(emulation_help(platform, facts.platform, problem))


def binfmt_problem(platform: str, binfmt: Path | None = None) -> str | None:
    """Why the kernel cannot run `platform`'s programs through QEMU, or None when it can."""
    binfmt = binfmt or BINFMT_DIR
    qemu = _QEMU.get(_arch(platform), _arch(platform))
    status = binfmt / "status"
    if not status.is_file():
        return f"binfmt_misc is not mounted at {binfmt}, so no emulator is registered"
    if status.read_text().strip() != "enabled":
        return f"binfmt_misc is disabled ({status} says {status.read_text().strip()!r})"
    for entry in sorted(binfmt.iterdir()):
        if entry.name in ("status", "register"):
            continue
        with contextlib.suppress(OSError):
            text = entry.read_text()
            interpreter = re.search(r"^interpreter (\S+)", text, re.MULTILINE)
            names = {entry.name, Path(interpreter.group(1)).name if interpreter else ""}
            if not any(name in (f"qemu-{qemu}", f"qemu-{qemu}-static", f"{qemu}-binfmt-P") for name in names):
                continue
            flags = re.search(r"^flags: (\S*)", text, re.MULTILINE)
            if not text.startswith("enabled"):
                return f"the {entry.name} handler in {binfmt} is disabled"
            if "F" not in (flags.group(1) if flags else ""):
                return (
                    f"the {entry.name} handler in {binfmt} lacks the F (fix-binary) flag, so containers, "
                    "which do not have its interpreter, cannot use it"
                )
            return None
    return f"no binfmt_misc handler for {qemu} is registered (no qemu-{qemu} in {binfmt})"


def emulation_help(platform: str, host: str, problem: str) -> str:
    arch = _arch(platform)
    return (
        f"cannot build for {platform} on this {host} engine: RUN steps of a {platform} image need an emulator "
        f"(QEMU, through the kernel's binfmt_misc), but {problem}. Enable it as root: on Debian or Ubuntu "
        "`apt-get install qemu-user-static binfmt-support`, then `mount -t binfmt_misc binfmt_misc "
        f"{BINFMT_DIR}` (if it is not mounted) and `update-binfmts --enable`; on any Linux with Docker "
        f"`docker run --privileged --rm tonistiigi/binfmt --install {arch}`; Docker Desktop has it built in. "
        f"Or build only {host}. (Set {SKIP_EMULATION_CHECK_ENV}=1 to skip this check.)"
    )


# ----- pushing: one build per platform, then the index ---------------------------------------


def concurrency_setting(value: int | None = None) -> int:
    """How many platforms build at once: the argument, else FLYTE_IMAGES_PLATFORM_CONCURRENCY, else 2."""
    raw = str(value) if value is not None else os.environ.get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    if not raw.isdigit() or int(raw) < 1:
        source = "platform_concurrency" if value is not None else CONCURRENCY_ENV
        raise ConfigError(f"{source}={raw!r} is not a whole number of builds of at least 1; use e.g. {source}=2")
    return int(raw)


def build_split(
    request: BuildRequest,
    progress: Progress,
    run: Run,
    concurrency: int,
    local_tags: bool = True,
    stop: Callable[[], None] | None = None,
) -> BuildResult:
    """Build and push each platform on its own, then write the index under every tag. Each
    platform's build gets its own registry cache only (`for_platform`). `local_tags`: the builds
    run on the local engine, whose store keeps a tag per pushed platform to remove after; `stop`:
    also called when one platform fails (or Ctrl-C), for builds still waiting to start."""
    from flyte_images._errors import RegistryError
    from flyte_images._registry import platform_reference

    try:
        parts = {tag: {p: platform_reference(tag, p) for p in request.platforms} for tag in request.tags}
    except (ValueError, RegistryError) as exc:
        raise BuildError(f"cannot push {', '.join(request.platforms)} one by one: {exc}") from None
    reused = _pushed_before(request, parts)
    for platform in reused:
        say = f"{platform}: already pushed as {parts[request.tags[0]][platform]} by an earlier build of this image"
        progress(ProgressEvent("log", "", say, say))
    todo = [p for p in request.platforms if p not in reused]
    sink = _serialized(progress)
    runs = Runs()
    import concurrent.futures  # here: a single-platform build never needs a pool

    with concurrent.futures.ThreadPoolExecutor(max(1, min(concurrency, len(todo) or 1))) as pool:
        futures = [
            pool.submit(
                run,
                dataclasses.replace(for_platform(request, p), tags=tuple(parts[t][p] for t in request.tags)),
                sink(p),
                runs,
            )
            for p in todo
        ]
        try:  # wait for every build; on the first failure (or Ctrl-C) stop the others and raise it
            for done in concurrent.futures.as_completed(futures):
                if (error := done.exception()) is not None:
                    raise error
        except BaseException:
            for future in futures:
                future.cancel()
            runs.stop()
            if stop is not None:
                stop()
            raise
    # Drop the local per-platform tags the docker driver's push leaves behind (best effort): a
    # native multi-platform push leaves nothing in the local store, and BuildKit's cache, which
    # the next build uses, is kept apart from these tags.
    if todo and local_tags:
        with contextlib.suppress(*_PROBE_ERRORS):
            _engine.cli("image", "rm", *(parts[tag][p] for tag in request.tags for p in todo))
    digests = [_write_index(tag, parts[tag]) for tag in request.tags]
    built = [future.result() for future in futures]
    return BuildResult(
        reference=request.tags[0],
        digest=digests[0],
        nodes={p: a for result in built for p, a in result.nodes.items()},
        waited={p: s for result in built for p, s in result.waited.items()},
    )


def _pushed_before(request: BuildRequest, parts: dict[str, dict[str, str]]) -> set[str]:
    """Platforms an interrupted earlier build already pushed, under every tag, with this
    request's identity label. Whatever cannot be confirmed is built again (never guessed)."""
    import asyncio

    from flyte_images import _config
    from flyte_images._errors import RegistryError
    from flyte_images._registry import Registry

    identity = request.labels.get(IDENTITY_LABEL)
    if not identity:
        return set()

    async def there(registry: Registry, platform: str, reference: str) -> bool:
        try:
            found = await registry.platform_image(reference, platform)
        except RegistryError:
            return False
        return found is not None and found.labels.get(IDENTITY_LABEL) == identity

    async def ask(pairs: list[tuple[str, str]]) -> list[bool]:
        async with Registry(insecure=_config.insecure_registries()) as registry:
            return list(await asyncio.gather(*(there(registry, p, r) for p, r in pairs)))

    pairs = [(p, refs[p]) for refs in parts.values() for p in request.platforms]
    missing = {p for (p, _), found in zip(pairs, run_coroutine(ask(pairs)), strict=True) if not found}
    return set(request.platforms) - missing


def _write_index(tag: str, parts: dict[str, str]) -> str:
    from flyte_images import _config
    from flyte_images._errors import RegistryError
    from flyte_images._registry import push_index

    try:
        return run_coroutine(push_index(tag, parts, insecure=tuple(_config.insecure_registries())))
    except RegistryError as exc:
        listed = ", ".join(f"{p} as {ref}" for p, ref in sorted(parts.items()))
        raise PartialPushError(
            f"every platform was pushed ({listed}), but the index that makes them one image could not be written "
            f"under {tag}: {exc}. Until it is, {tag} does not exist; build again to complete it (the pushed "
            "platforms are reused, nothing is rebuilt)",
            parts,
        ) from None


def _serialized(progress: Progress) -> Callable[[str], Progress]:
    """One progress sink shared by concurrent builds: calls never overlap, and every line of a
    platform's build says which platform it belongs to (step titles already do, BuildKit style)."""
    lock = threading.Lock()

    def tagged(platform: str) -> Progress:
        def sink(event: ProgressEvent) -> None:
            line = event.line if platform in event.line else f"[{platform}] {event.line}"
            with lock:
                progress(dataclasses.replace(event, line=line))

        return sink

    return tagged
