"""A FAKE, in-memory build backend for tests without a container engine (not an entry point: pass
an instance to whatever takes a builder). It interprets the Dockerfile subset flyte-images renders
as BuildKit reads it and keeps loaded images in `store`, pushed ones in `pushed` (the first
platform; all in `pushed_platforms`) and each BuildRequest in `requests` (cache choices,
`no_cache` and `compression` are only recorded).

- FROM: an unknown base raises BaseImageNotFoundError (by default every base is known); an
  image it built, or an earlier stage (`FROM x AS name`), is built upon; `scratch` is empty.
- ARG, ENV, LABEL, WORKDIR: recorded, with BuildKit's quoting and `$VAR` expansion.
- COPY / ADD of local files and folders (JSON or plain form, `--from=stage`, `--chmod`): bytes
  and modes are read from the context AT BUILD TIME, so a test can prove what was sent.
- RUN: scripts are NOT executed; only `exit N` (N != 0: StepFailedError), `cat PATH` of a
  mounted secret and `echo WORDS` (`$NAME` from the ENV and from secrets: a mount's `env=NAME`,
  or `NAME="$(cat PATH)"`) act, printing through the shared BuildOutput (secrets redacted).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import ClassVar, NoReturn

from flyte_images._errors import BaseImageNotFoundError, BuildError
from flyte_images.builders.base import BuildRequest, BuildResult, Progress, SecretSource, load_one_platform
from flyte_images.builders.output import BuildOutput

from . import _dockerfile

_STEPS = {"FROM", "COPY", "ADD", "RUN", "WORKDIR"}  # the instructions BuildKit numbers [i/n]
_IGNORED = {"USER", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD"}
_EXIT = re.compile(r"^exit\s+(\d+)$")
_CAT = re.compile(r"^cat\s+(\S+)$")
_ASSIGN = re.compile(r"""^([A-Za-z_]\w*)="?\$\(cat\s+([^)\s]+)\)"?""")
# One COPY source: its name, whether it is a folder, and relative path -> (bytes, mode).
_Source = tuple[str, bool, dict[str, tuple[bytes, int]]]
_Secrets = Mapping[str, str | None]  # secret id -> value (None: not available here)


@dataclass(frozen=True)
class FakeImage:
    """One image as the fake built it: what COPY put where (bytes, modes), ENV, LABELs."""

    reference: str
    dockerfile: str
    platform: str
    files: Mapping[str, bytes]  # absolute image path -> bytes
    modes: Mapping[str, int]  # absolute image path -> permission bits
    env: Mapping[str, str]
    labels: Mapping[str, str]
    workdir: str
    digest: str


@dataclass
class _Stage:
    """The image being built by one stage (mutable while the Dockerfile is interpreted)."""

    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"

    def variables(self) -> dict[str, str]:
        return {**self.args, **self.env}  # ENV wins over ARG, as in BuildKit

    def declare(self, rest: str, plat: str) -> None:
        """ARG (one or more `NAME[=default]`): a platform ARG takes the platform's value, others
        their default (or "")."""
        for item in _dockerfile.words(rest, self.variables()):
            name, has_default, default = item.partition("=")
            if name in _dockerfile.PLATFORM_ARGS:
                self.args[name] = _dockerfile.platform_arg(name, plat)
            elif has_default:
                self.args[name] = default
            else:
                self.args.setdefault(name, "")


class FakeBuilder:
    """A fake in-memory backend for tests: interprets the Dockerfile, executes nothing."""

    name: ClassVar[str] = "fake"
    exports_cache: ClassVar[bool] = False  # cache specs are recorded in `requests`, never written
    multi_platform: ClassVar[bool] = True  # every platform of a push in one build (`pushed_platforms`)
    loads: ClassVar[bool] = True  # into `store`
    compressions: ClassVar[tuple[str, ...]] = ("gzip", "zstd")  # recorded in `requests`; it stores no layers

    def __init__(self, bases: Iterable[str] | None = None) -> None:
        """`bases`: the base images it "has" (None: every base)."""
        self.bases = None if bases is None else {_normalize(b) for b in bases}
        self.store: dict[str, FakeImage] = {}
        self.pushed: dict[str, FakeImage] = {}
        self.pushed_platforms: dict[str, dict[str, FakeImage]] = {}
        self.requests: list[BuildRequest] = []
        self._lock = threading.Lock()

    def local_exists(self, reference: str) -> bool | None:
        # Bases it was told about are "in its store", as a base image is in an engine's.
        return _normalize(reference) in self.store or _normalize(reference) in (self.bases or ())

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        with self._lock:
            self.requests.append(request)
        if len(request.platforms) > 1 and not request.push:
            request = load_one_platform(request, progress, _dockerfile.host_platform())
        output = BuildOutput(request.redact, progress)
        text = request.dockerfile.read_text(encoding="utf-8")
        secrets = {s.id: _secret_value(s) for s in request.secrets}
        platforms = request.platforms or (_dockerfile.host_platform(),)
        run = _Run(self, request, output, secrets)
        built = {}
        for plat in platforms:
            stage = run.interpret(text, plat, prefix=f"{plat} " if len(platforms) > 1 else "")
            labels = {**stage.labels, **request.labels}
            built[plat] = _image(request.tags[0], text, plat, stage, labels)
        first = built[platforms[0]]
        with self._lock:
            for tag in request.tags:
                image = replace(first, reference=tag)
                if request.push:
                    self.pushed[_normalize(tag)] = image
                    self.pushed_platforms[_normalize(tag)] = {p: replace(i, reference=tag) for p, i in built.items()}
                else:
                    self.store[_normalize(tag)] = image
        return BuildResult(reference=request.tags[0], digest=first.digest)


class _Run:
    """One interpretation of a Dockerfile for one platform, reporting like BuildKit's plain output."""

    def __init__(self, builder: FakeBuilder, request: BuildRequest, output: BuildOutput, secrets: _Secrets) -> None:
        self.builder, self.request, self.output, self.secrets = builder, request, output, secrets
        self.plat, self.prefix = "", ""
        self.stages: dict[str, _Stage] = {}
        self.vertex = 0
        self.seconds = 0

    def say(self, text: str) -> None:
        self.output.feed(f"#{self.vertex} {text}")

    def print(self, text: str) -> None:
        """A line the current step printed, with BuildKit's seconds prefix."""
        for line in text.splitlines() or [""]:
            self.seconds += 1
            self.say(f"{self.seconds / 1000:.3f} {line}")

    def start(self, title: str) -> None:
        self.vertex += 1
        self.say(title)

    def fail(self, error: str) -> NoReturn:
        self.say(f"ERROR: {error}")
        raise self.output.step_failed(error)

    def interpret(self, text: str, plat: str, prefix: str) -> _Stage:
        """Build the Dockerfile for one platform; the last stage is the image."""
        self.plat, self.prefix, self.stages = plat, prefix, {}
        self.start(f"[internal] load build definition from {self.request.dockerfile.name}")
        self.say("DONE 0.0s")
        instructions = _dockerfile.instructions(text)
        total = sum(1 for keyword, _ in instructions if keyword in _STEPS)
        stage, global_args, index = _Stage(), _Stage(), 0
        for keyword, rest in instructions:
            if keyword in _STEPS:
                index += 1
                if keyword != "FROM":
                    self.start(f"[{self.prefix}{index}/{total}] {keyword} {rest}")
            if keyword == "FROM":
                stage = self.from_(rest, global_args, f"[{self.prefix}{index}/{total}] FROM")
            elif keyword == "ARG":
                (stage if self.stages else global_args).declare(rest, self.plat)
            elif keyword in {"ENV", "LABEL"}:
                pairs = _dockerfile.pairs(rest, stage.variables())
                (stage.env if keyword == "ENV" else stage.labels).update(pairs)
            elif keyword == "WORKDIR":
                stage.workdir = _join(stage.workdir, _dockerfile.word(rest.strip(), stage.variables()))
            elif keyword in {"COPY", "ADD"}:
                self.copy(stage, rest)
            elif keyword == "RUN":
                self.run(stage, rest)
            elif keyword not in _IGNORED:
                raise BuildError(f"dockerfile parse error: unknown instruction: {keyword}")
            if keyword in _STEPS:
                self.say("DONE 0.0s")
        return stage

    def from_(self, rest: str, global_args: _Stage, title: str) -> _Stage:
        words = [w for w in _dockerfile.words(rest, global_args.args) if not w.startswith("--")]
        base = words[0] if words else ""
        self.start(f"[internal] load metadata for {base}")
        # An earlier stage, else an image it built and loaded, else a base it "has".
        parent = self.stages[base] if base in self.stages else self.builder.store.get(_normalize(base))
        if parent is not None:
            copied = (dict(parent.files), dict(parent.modes), dict(parent.env), dict(parent.labels))
            stage = _Stage(*copied, workdir=parent.workdir)
        elif base == "scratch":  # BuildKit's empty image (a stage holding build tools): nothing to pull
            stage = _Stage()
        elif self.builder.bases is None or _normalize(base) in self.builder.bases:
            stage = _Stage(env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
        else:
            self.say(f"ERROR: {base}: not found")
            raise BaseImageNotFoundError(
                f"base image {base} is not in the fake builder's images (it has: "
                f"{', '.join(sorted(self.builder.bases or ()))}); give it to FakeBuilder(bases=...)"
            )
        self.say("DONE 0.0s")
        self.start(f"{title} {base}")
        name = words[2] if len(words) == 3 and words[1].lower() == "as" else str(len(self.stages))
        self.stages[name] = stage
        return stage

    def copy(self, stage: _Stage, rest: str) -> None:
        flags, args = _dockerfile.flags(rest)
        options = dict(flags)
        variables = stage.variables()
        if args.startswith("["):  # the JSON form
            words = [_dockerfile.word(w, variables) for w in json.loads(args)]
        else:
            words = _dockerfile.words(args, variables)
        if len(words) < 2:
            self.fail(f"COPY needs a source and a destination: {rest}")
        *sources, written = words
        dest = _join(stage.workdir, written)
        # Like BuildKit: a destination ending in "/" or ".", or an existing folder, is a folder.
        into_dir = written.endswith(("/", ".")) or len(sources) > 1 or _is_dir(stage, dest)
        for src, is_dir, entries in self.copy_sources(options.get("from"), sources):
            for rel, (data, mode) in entries.items():
                name = rel if is_dir else PurePosixPath(src).name
                target = _join(dest, name) if is_dir or into_dir else dest
                stage.files[target] = data
                stage.modes[target] = int(options["chmod"], 8) if "chmod" in options else mode

    def copy_sources(self, origin: str | None, sources: list[str]) -> list[_Source]:
        if origin is not None:
            return self.stage_sources(origin, sources)
        root = self.request.context.resolve()
        found: list[_Source] = []
        for src in sources:
            matches = sorted(root.glob(src.lstrip("/"))) if any(c in src for c in "*?[") else []
            for path in matches or [root / src.lstrip("/")]:  # a pattern that matches nothing is not found
                real = path.resolve()
                if real != root and root not in real.parents:
                    self.fail(f'forbidden path outside the build context: {src} ("{path}")')
                if not path.exists():
                    self.fail(f'failed to compute cache key: "/{src.lstrip("/")}" not found: not found')
                found.append((path.name, path.is_dir(), _read(path)))
        return found

    def stage_sources(self, origin: str, sources: list[str]) -> list[_Source]:
        stage = self.stages.get(origin)
        if stage is None:
            self.fail(f"COPY --from={origin}: no stage of that name")
        found: list[_Source] = []
        for src in sources:
            path = _join("/", src)
            prefix = path.rstrip("/") + "/"
            inside = {p[len(prefix) :]: (d, stage.modes[p]) for p, d in stage.files.items() if p.startswith(prefix)}
            if path in stage.files:
                found.append((PurePosixPath(path).name, False, {"": (stage.files[path], stage.modes[path])}))
            elif inside:
                found.append((PurePosixPath(path).name, True, inside))
            else:
                self.fail(f'"{src}" not found in stage {origin}')
        return found

    def run(self, stage: _Stage, rest: str) -> None:
        flags, command = _dockerfile.flags(rest)
        script = _dockerfile.script(command)
        targets: dict[str, str] = {}  # path in the step -> secret id
        bound: dict[str, str] = {}  # environment variable in the step -> secret id
        for flag, spec in flags:
            mount = dict(option.partition("=")[::2] for option in spec.split(","))
            if flag == "mount" and mount.get("type") == "secret":
                secret_id = mount.get("id") or PurePosixPath(mount.get("target", "")).name
                targets[mount.get("target") or mount.get("dst") or f"/run/secrets/{secret_id}"] = secret_id
                if "env" in mount:
                    bound[mount["env"]] = secret_id
        for raw in script.splitlines():
            line = raw.strip()
            if (assigned := _ASSIGN.match(line)) and assigned.group(2) in targets:
                bound[assigned.group(1)] = targets[assigned.group(2)]
            elif (cat := _CAT.match(line)) and cat.group(1) in targets:
                value = self.secrets.get(targets[cat.group(1)])
                if value is not None:
                    self.print(value)
            elif line == "echo" or line.startswith("echo "):
                secrets = {name: self.secrets.get(i) or "" for name, i in bound.items()}
                self.print(" ".join(_dockerfile.words(line[4:], {**stage.variables(), **secrets})))
            elif exit_code := _EXIT.match(line):
                if int(exit_code.group(1)) != 0:
                    self.fail(
                        f"process {json.dumps('/bin/sh -c ' + script)} did not complete successfully: "
                        f"exit code: {exit_code.group(1)}"
                    )
                return


def _join(base: str, path: str) -> str:
    """`path` in the image, relative to `base` (an absolute `path` replaces it), normalised."""
    return "/" + posixpath.normpath(posixpath.join(base, path)).lstrip("/")


def _read(path: Path) -> dict[str, tuple[bytes, int]]:
    """A file -> {"": ...}; a folder -> every file below it by relative path (symlinks followed)."""
    if not path.is_dir():
        return {"": (path.read_bytes(), path.stat().st_mode & 0o7777)}
    below = (p for p in sorted(path.rglob("*")) if p.is_file())
    return {p.relative_to(path).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o7777) for p in below}


def _is_dir(stage: _Stage, path: str) -> bool:
    return path in {"/", stage.workdir} or any(p.startswith(path + "/") for p in stage.files)


def _secret_value(source: SecretSource) -> str | None:
    """What BuildKit would mount: the variable's value, the file's text; None when absent."""
    if source.env:
        return os.environ.get(source.env)
    if source.file is not None and Path(source.file).is_file():
        return Path(source.file).read_text(encoding="utf-8", errors="replace")
    return None


def _normalize(reference: str) -> str:
    """`name` and `name:latest` are the same image; a digest or tag is kept."""
    last = reference.rsplit("/", 1)[-1]
    return reference if ":" in last or "@" in reference else f"{reference}:latest"


def _image(reference: str, dockerfile: str, plat: str, stage: _Stage, labels: dict[str, str]) -> FakeImage:
    content = {
        "files": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(stage.files.items())},
        "modes": dict(sorted(stage.modes.items())),
        "env": stage.env,
        "labels": labels,
        "workdir": stage.workdir,
        "platform": plat,
    }
    digest = "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    files, modes, env = dict(stage.files), dict(stage.modes), dict(stage.env)
    return FakeImage(reference, dockerfile, plat, files, modes, env, labels, stage.workdir, digest)
