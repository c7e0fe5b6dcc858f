"""`docker buildx build` as both built-in backends run it: the command line, the run, the error.

The command names secrets by environment variable or file (`--secret id=...,env=...`), so no
value is ever on it. It is run as a plain process, not through a library, so that a build can be
stopped (`Runs`: when one platform of several fails, the others are cancelled) and Ctrl-C leaves
none running. Every line goes through one `BuildOutput`: redacted, parsed into progress events,
and remembered so that a failure becomes a typed error naming the step.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from flyte_images import _interrupt
from flyte_images._errors import BuildError, EngineUnavailableError
from flyte_images.builders import _engine
from flyte_images.builders.base import BuildRequest, BuildResult, Progress
from flyte_images.builders.output import BuildOutput

# `[internal]`, or `[linux/arm64 internal]` in a build of several platforms.
BASE_METADATA = re.compile(r"\[(?:(\S+) )?internal\] load metadata for (\S+)")
DENIED = re.compile(r"denied|unauthorized|authentication required|forbidden|insufficient_scope", re.I)
_TAIL = 400  # lines of output kept to explain a failure
# buildx's echo of the Dockerfile around a failed instruction ("Dockerfile:3", a rule, "   3 | RUN
# ..."): source text, not build output, and it would show steps that never ran as if they had.
_SNIPPET = re.compile(r"^(?:\s*\d+ \| |-{20}$|[\w.-]+:\d+$)")
_TITLE = re.compile(r"^(#\d+ )\[([^\]]*)\]")

# (redacted output, what the engine said, its last line) -> the typed error, or None for the
# general one: the failed step with its exit code and last lines.
Explain = Callable[[str, BuildOutput, str], BuildError | None]


def check_cli(no_docker: str, no_buildx: str) -> None:
    """Raise EngineUnavailableError(`no_docker`) without the docker CLI, (`no_buildx`) without
    its buildx plugin (found on disk, else asked)."""
    if shutil.which("docker") is None:
        raise EngineUnavailableError(no_docker)
    if not _engine.buildx_installed() and _engine.cli("buildx", "version").returncode != 0:
        raise EngineUnavailableError(no_buildx)


def cache_spec(text: str) -> str:
    """A cache source or target as buildx takes it: `type=registry,ref=...`, or a bare image reference."""
    return text if "=" in text else f"type=registry,ref={text}"


def buildx_command(
    request: BuildRequest, metadata: Path, native: str | None = None, options: Sequence[str] = ()
) -> list[str]:
    """The `docker buildx build` command line for `request`. `native`: the platform the builder
    builds when none is named (the engine's own, on the `docker` driver); `options` go before the
    context, and one that names an `--output` takes the place of `--push` / `--load`."""
    command = ["docker", "buildx", "build", "--progress", "plain", "--file", str(request.dockerfile)]
    command += ["--metadata-file", str(metadata)]
    options = compressed_output(request, options)
    if "--output" not in options:
        command.append("--push" if request.push else "--load")
    for tag in request.tags:
        command += ["--tag", tag]
    # Naming the engine's own platform builds the same image, but costs the docker driver
    # ~50 ms a build (measured: `--platform linux/amd64` on an amd64 engine, 0.66 -> 0.71 s).
    if request.platforms and request.platforms != (native,):
        command += ["--platform", ",".join(request.platforms)]
    for secret in request.secrets:
        command += ["--secret", secret.buildkit_spec()]
    for source in request.cache_from:
        command += ["--cache-from", cache_spec(source)]
    if request.cache_to:
        command += ["--cache-to", cache_spec(request.cache_to[0])]
    if request.no_cache:
        command.append("--no-cache")
    for key, value in request.labels.items():
        command += ["--label", f"{key}={value}"]
    return [*command, *options, str(request.context)]


def compressed_output(request: BuildRequest, options: Sequence[str]) -> list[str]:
    """`options` with the image output of a push asking for `request.compression`, when it is not
    BuildKit's default gzip: the `--output` given gets the keys, else one takes `--push`'s place.
    force-compression recompresses the base's gzip layers too, so every layer pulls as zstd; OCI
    media types, since Docker's manifest has no zstd layer type."""
    out = list(options)
    if not request.push or request.compression == "gzip":
        return out
    keys = [f"compression={request.compression}", "force-compression=true", "oci-mediatypes=true"]
    if "--output" not in out:
        return [*out, "--output", ",".join(["type=image", "push=true", *keys])]
    at = out.index("--output") + 1
    given = {part.split("=", 1)[0] for part in out[at].split(",")}
    out[at] = ",".join([out[at], *(key for key in keys if key.split("=", 1)[0] not in given)])
    return out


def run(
    request: BuildRequest,
    progress: Progress,
    command: Callable[[Path], list[str]],
    explain: Explain,
    what: str,
    runs: Runs | None = None,
) -> BuildResult:
    """Run the build `command(metadata_file)` makes; a failure raises what `explain` says, else
    the failed step's StepFailedError, else a BuildError saying `what` failed."""
    output = BuildOutput(request.redact, progress)
    platform = request.platforms[0] if len(request.platforms) == 1 and runs is not None else None
    with tempfile.TemporaryDirectory(prefix="flyte-images-meta-") as meta_dir:
        metadata = Path(meta_dir) / "metadata.json"
        argv = command(metadata)
        plugin = _engine.buildx_plugin()
        if plugin is not None:
            argv = [plugin, *argv[2:]]  # `docker-buildx build ...` for `docker buildx build ...`
        returncode, tail = _stream(argv, output, platform, runs)
        if returncode != 0:
            stopped = runs is not None and runs.stopped
            text = output.redact("build stopped: another platform's build failed" if stopped else "".join(tail))
            last = [line for line in text.strip().splitlines() if line.strip()][-1:] or [f"{what} failed"]
            summary = last[0][-500:]
            error = explain(text, output, summary)
            if error is None and not output.failed_step and output.exit_code is None:
                error = BuildError(f"{what} failed: {summary}")  # before any step ran
            raise error or output.step_failed(summary)
        digest = json.loads(metadata.read_text()).get("containerimage.digest") if metadata.is_file() else None
    return BuildResult(reference=request.tags[0], digest=digest)


def _stream(command: list[str], output: BuildOutput, platform: str | None, runs: Runs | None) -> tuple[int, deque[str]]:
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
                line = platform_titles(raw, platform) if platform else raw
                tail.append(line)
                if not _SNIPPET.match(line):
                    output.feed(line)
            return process.wait(), tail
    except BaseException:
        process.terminate()  # Ctrl-C or a failing progress sink: no build left running
        raise
    finally:
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if runs is not None:
            runs.discard(process)


def platform_titles(line: str, platform: str) -> str:
    """`#7 [2/3] RUN x` -> `#7 [linux/arm64 2/3] RUN x`: BuildKit's own form in multi-platform
    builds, so step titles (and errors naming a failed step) say which platform they are."""
    return _TITLE.sub(lambda m: f"{m.group(1)}[{platform} {m.group(2)}]", line, count=1)


class Runs:
    """The build processes running now, so one failure (or Ctrl-C) can stop the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen[str]] = set()
        self.stopped = False

    def add(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._processes.add(process)
            if self.stopped:
                process.terminate()

    def discard(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._processes.discard(process)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for process in self._processes:
                process.terminate()  # buildx cancels its build on SIGTERM
