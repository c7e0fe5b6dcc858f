"""Dockerfile rendering: a list of instructions, built one by one. Pure: no Docker, no network.

Each layer appends its own instructions through `Instructions`. Every instruction passes one
check (`line_safe`) refusing any line terminator Docker knows and a trailing backslash, so a
rendered Dockerfile parses to exactly `len(instructions)` instructions. A layer's files are
under `_fi/<n>/` in the context; files a RUN reads are bind-mounted into it, and secrets only
into the RUN that asks for them. The pinned uv is a build tool: a first stage (`UV_STAGE`) holds
the target platform's binary, bind-mounted into every RUN that runs uv. With
`RenderOptions(ca_bundle=True)` the `flyte-images-ca` build secret is mounted into the layers'
RUN steps, and one `ARG` points the usual CA variables at it (in the RUN steps' environment, not
the image's). No `# syntax=` line (it would pull a frontend image).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._errors import InvalidLayerArgument
from . import quote as q
from .validation import image_reference

if TYPE_CHECKING:
    from .._image.secret import Secret

CA_SECRET_ID = "flyte-images-ca"
UV_STAGE = "flyte-images-uv"
UV_STAGE_INSTRUCTIONS = (f"FROM scratch AS {UV_STAGE}", "ARG TARGETARCH", 'COPY ["_fi/uv/${TARGETARCH}/uv", "/uv"]')
TEMPLATE = "debian-base.Dockerfile"
FLYTE_USER_FOOTER = "USER flyte"

HEAVY_NAMES = frozenset(
    {
        "torch", "torchvision", "torchaudio", "tensorflow", "tensorflow-cpu", "tensorflow-gpu",
        "tf-nightly", "jax", "jaxlib", "triton", "xformers", "flash-attn", "vllm", "cupy",
        "paddlepaddle", "paddlepaddle-gpu", "mxnet", "onnxruntime-gpu", "deepspeed", "tensorrt",
    }
)  # fmt: skip
HEAVY_PREFIXES = ("nvidia-", "cupy-cuda", "jax-cuda", "tensorrt-")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_CONTINUATION = " \\\n    "


@dataclass(frozen=True)
class RenderOptions:
    """Build-time choices that change the Dockerfile but not the image's contents or tag."""

    ca_bundle: bool = False


def is_heavy(requirement: str) -> bool:
    """Whether a requirement names a heavy ML package (by its normalised project name)."""
    if "://" in requirement.split("@", 1)[0]:
        return False
    match = _NAME.match(requirement)
    if not match:
        return False
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name in HEAVY_NAMES or name.startswith(HEAVY_PREFIXES)


def has_credentials(url: str) -> bool:
    """Whether a URL carries a literal user or password (not a `$NAME` reference to a secret)."""
    userinfo, at, _host = urlsplit(url).netloc.rpartition("@")
    return bool(at) and "$" not in userinfo


def template_bytes() -> bytes:
    """The base template's bytes, read through this module's loader as `pkgutil.get_data` does
    (importlib.resources, whose import costs more than the read, only for a loader without
    `get_data`)."""
    get_data = getattr(__spec__.loader, "get_data", None)
    if get_data is not None and __file__:
        data: bytes = get_data(os.path.join(os.path.dirname(os.path.dirname(__file__)), "dockerfiles", TEMPLATE))
        return data
    from importlib import resources

    return (resources.files("flyte_images") / "dockerfiles" / TEMPLATE).read_bytes()


@cache
def template_instructions() -> tuple[tuple[str, ...], ...]:
    """The base template as instructions, each a tuple of its physical lines (comments and
    blank lines dropped; a line ending in a backslash continues the instruction)."""
    instructions: list[tuple[str, ...]] = []
    current: list[str] = []
    for line in template_bytes().decode("utf-8").split("\n"):
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        if not line.endswith("\\"):
            instructions.append(tuple(current))
            current = []
    return tuple(instructions)


# BuildKit's Dockerfile parser refuses a longer line (checked on the engine: 65535 builds, one more fails).
MAX_LINE_BYTES = 65535


def line_too_long(parameter: str, size: int, what: str, fix: str) -> InvalidLayerArgument:
    """The error for a Dockerfile line of `size` bytes; `what` names the offending value by a
    short prefix only (a long value may be a key or a certificate)."""
    return InvalidLayerArgument(
        parameter,
        f"{what} would make a Dockerfile line of {size} bytes, over BuildKit's limit of {MAX_LINE_BYTES} bytes "
        f"per line (the build would fail on the engine); {fix}",
    )


def prefix(value: str, length: int = 24) -> str:
    """The start of a long value, for a message: enough to recognise it, never the whole."""
    return repr(value[:length] + "...") if len(value) > length else repr(value)


def line_safe(parameter: str, value: str) -> str:
    """`value` if it can be part of one Dockerfile line; else InvalidLayerArgument."""
    found = re.search(r"[\r\n]", value)
    if found:
        raise InvalidLayerArgument(
            parameter, f"{value!r} contains a line break ({found.group()!r}); it would start another instruction"
        )
    if value.rstrip().endswith("\\"):
        raise InvalidLayerArgument(
            parameter, f"{value!r} ends with a backslash, which would join the next instruction; remove it"
        )
    size = len(value.encode("utf-8", "surrogateescape"))
    if size > MAX_LINE_BYTES:
        raise line_too_long(
            parameter, size, f"{prefix(value)} ({len(value)} characters)", "split it over several layers"
        )
    return value


def base_reference(parameter: str, value: str | None) -> str:
    """A base image reference fit for `FROM` (see `validation.image_reference`)."""
    return line_safe(parameter, image_reference(parameter, value))


@dataclass
class Instructions:
    """The Dockerfile being rendered, and the helpers layers render with."""

    python_version: tuple[int, int] | None
    base_image: str
    options: RenderOptions
    instructions: list[str] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    has_uv: bool = False
    venv: bool = False
    flyte_user: bool = False  # the base made the `flyte` user: copies are owned by it
    url_secrets: list[tuple[str, str]] = field(default_factory=list)  # (secret id, index URL)
    ca_declared: bool = False  # the CA variables' ARG is rendered: every later RUN mounts their file
    _pending_mounts: list[str] = field(default_factory=list)
    _footer: int = 0  # the last instructions of `instructions`, which stay last (`_runs_as_flyte`)

    CA_PATH = f"/run/secrets/{CA_SECRET_ID}"
    WORK = "/tmp/flyte-images"  # bind mounts and scratch space, never part of an image layer
    UV_CACHE = "--mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv"
    POETRY_CACHE = "--mount=type=cache,target=/root/.cache/pypoetry,id=flyte-images-poetry"
    APT_CACHE = (
        "--mount=type=cache,target=/var/cache/apt,sharing=locked,id=flyte-images-apt-archives",
        "--mount=type=cache,target=/var/lib/apt/lists,sharing=locked,id=flyte-images-apt-lists",
    )
    SCRATCH = f"--mount=type=tmpfs,target={WORK}/scratch"
    # From a stage, not `source=_fi/uv/${TARGETARCH}/uv`: Docker 20.10's BuildKit does not expand
    # build arguments in mount options, while the stage's COPY picks the platform's binary.
    UV_BINARY = f"--mount=type=bind,from={UV_STAGE},source=/uv,target=/usr/local/bin/uv"

    def add(self, *lines: str) -> None:
        """One instruction of one or more physical lines; every line passes `line_safe`."""
        for line in lines:
            line_safe("Dockerfile line", line)
        self._append(_CONTINUATION.join(lines))

    def _append(self, instruction: str) -> None:
        self.instructions.insert(len(self.instructions) - self._footer, instruction)

    def _runs_as_flyte(self) -> None:
        """The base made the `flyte` user and the /opt/venv the installs go to: copies are owned
        by it, and `USER flyte` ends the Dockerfile whatever layers follow (their steps run as root)."""
        self.venv = self.flyte_user = True
        if not self._footer:
            self.instructions.append(FLYTE_USER_FOOTER)
            self._footer = 1

    def text(self) -> str:
        return "\n".join(self.instructions) + "\n"

    def base_environment(self) -> None:
        """The base template (`from_debian_base`), with its placeholders filled in."""
        assert self.python_version is not None
        version = f"{self.python_version[0]}.{self.python_version[1]}"
        base = base_reference("base_image", self.base_image)
        self.ensure_uv()
        for lines in template_instructions():
            filled = [
                line.replace("{base_image}", base).replace("{python_version}", version).replace("{uv}", self.UV_BINARY)
                for line in lines
            ]
            line_safe("Dockerfile line", filled[-1])  # earlier lines end in the template's own `\\`
            self._append("\n".join(filled))
        self._runs_as_flyte()

    def published_base(self) -> None:
        """Flyte's published default image as the base: its /opt/venv (VIRTUAL_ENV) receives
        the installs, the layers' steps run as root, and the container runs as `flyte` again."""
        self.from_base()
        self.add("USER root")
        self._runs_as_flyte()

    def from_base(self) -> None:
        self.add(f"FROM {base_reference('base_image', self.base_image)}")
        self.add("ARG TARGETARCH")

    def copy(self, source: str, dest: str) -> None:
        """COPY of a staged folder; owned by the `flyte` user where the base has made it."""
        chown = "--chown=flyte:flyte " if self.flyte_user else ""
        self.add(f"COPY {chown}{q.json_words([source, dest])}")

    def run_step(
        self, script: str, mounts: list[str], secrets: tuple[Secret, ...] = (), downloads: bool = True
    ) -> None:
        """One RUN of `script` with `mounts` and the `secrets` it reads. `downloads`: it may reach
        the network, so it needs the CA bundle when one is given (the first such step declares the
        CA variables; from there on every RUN mounts the file they name, since each sees them).
        A step that mounts uv's cache runs uv: the binary is mounted beside the cache."""
        prelude: list[str] = []
        if self.UV_CACHE in mounts:
            self.ensure_uv()
            at = mounts.index(self.UV_CACHE) + 1
            mounts = [*mounts[:at], self.UV_BINARY, *mounts[at:]]
        if downloads and self.options.ca_bundle and not self.ca_declared:
            ca = self.CA_PATH
            self.add(f"ARG SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} PIP_CERT={ca} CURL_CA_BUNDLE={ca}")
            self.ca_declared = True
        if self.ca_declared:
            mounts = [*mounts, f"--mount=type=secret,id={CA_SECRET_ID},target={self.CA_PATH}"]
        mounts = [*mounts, *self._pending_mounts]
        self._pending_mounts.clear()
        for secret in secrets:
            if secret not in self.secrets:
                self.secrets.append(secret)
            target = secret.mount.as_posix() if secret.mount else f"/run/secrets/{secret.build_id}"
            mounts = [*mounts, f"--mount=type=secret,id={secret.build_id},target={target}"]
            if secret.mount is None:
                name = secret.as_env_var or secret.source_env_var
                # A plain assignment has the status of its command substitution; `export` has not.
                prelude.append(f'{name}="$(cat {target})" && export {name}')
        # The prelude stops the step if it fails; the script then runs exactly as written.
        full = f"{' && '.join(prelude)} || exit 1\n{script}" if prelude else script
        lines = [*mounts, q.exec_form(full)]
        self.add(f"RUN {lines[0]}", *lines[1:])

    def ensure_uv(self) -> None:
        """The stage holding the pinned uv of the target platform, once, before the image's
        FROM (BuildKit builds it only for a step that uses it). `has_uv`: the build context
        must hold `_fi/uv/<arch>/uv`."""
        if not self.has_uv:
            self.instructions[:0] = UV_STAGE_INSTRUCTIONS
            self.has_uv = True

    def uv_in_image(self) -> None:
        """uv at /usr/local/bin/uv in the image itself (`with_uv`), for code that runs it."""
        self.ensure_uv()
        self.add(f'COPY --from={UV_STAGE} ["/uv", "/usr/local/bin/uv"]')

    def uv_install(self, layer: object | None, args: list[str], *, with_extra_args: bool = True) -> str:
        """`uv pip install` into the image's environment with the layer's index options."""
        words = ["uv", "pip", "install"]
        if not self.venv:
            words = ["UV_LINK_MODE=copy", "UV_PYTHON_DOWNLOADS=never", *words, "--system", "--break-system-packages"]
        words += self.index_args(layer)
        if with_extra_args:
            words += self.split_args("extra_args", getattr(layer, "extra_args", None))
        return q.shell_join([*words, *args])

    def index_args(self, layer: object | None) -> list[str]:
        """The layer's index options (index URLs, pre-releases) as uv arguments."""
        words: list[str] = []
        index_url = getattr(layer, "index_url", None)
        if index_url:
            words += ["--index-url", self.index_word(index_url)]
        for url in getattr(layer, "extra_index_urls", ()):
            words += ["--extra-index-url", self.index_word(url)]
        if getattr(layer, "pre", False):
            words.append("--prerelease=allow")
        return words

    def index_word(self, url: str) -> str:
        """An index URL for the shell. One with a literal user:password goes to the build as a
        secret (read from a mounted file in the RUN that needs it), so the credentials are never
        instruction text: not in the Dockerfile, the image history, or the build log."""
        if not has_credentials(url):
            return q.shell_expanding(url)
        known = dict((value, key) for key, value in self.url_secrets)
        secret_id = known.get(url) or f"flyte-images-index-{len(self.url_secrets)}"
        if url not in known:
            self.url_secrets.append((secret_id, url))
        self._pending_mounts.append(f"--mount=type=secret,id={secret_id},target=/run/secrets/{secret_id}")
        return f'"$(cat /run/secrets/{secret_id})"'

    def bind(self, index: int, rw: bool = False) -> str:
        return f"--mount=type=bind,source=_fi/{index},target={self.WORK}/{index}" + (",rw" if rw else "")

    def locked_export(self, index: int, command: str, subdir: str = "") -> str:
        """`command` run in the layer's bound folder (or its `subdir`: a project below the
        folders of its path sources), writing the requirements the install step reads."""
        folder = f"{self.WORK}/{index}" + (f"/{subdir}" if subdir else "")
        return f"cd {q.shell_word(folder)} && {command} --output-file {self.WORK}/scratch/requirements.txt"

    def project_install(self, index: int, secrets: tuple[Secret, ...]) -> None:
        mount = f"--mount=type=bind,source=_fi/{index}p,target={self.WORK}/{index}p,rw"
        script = self.uv_install(None, ["--no-deps", f"{self.WORK}/{index}p"])
        self.run_step(script, [self.UV_CACHE, mount], secrets)

    @staticmethod
    def split_args(parameter: str, text: str | None) -> list[str]:
        """Split user arguments like a shell would, and quote each so none can run a command."""
        if not text:
            return []
        try:
            return [q.shell_word(arg) for arg in shlex.split(text)]
        except ValueError as exc:
            raise InvalidLayerArgument(parameter, f"{text!r} cannot be split into arguments: {exc}") from exc
