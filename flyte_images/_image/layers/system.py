"""Layers that shape the system: the Debian base environment, apt packages, environment
variables, the working folder and shell commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..._errors import LayerNotAllowedError
from ..._formats import quote as q
from ..._formats.dockerfile import MAX_LINE_BYTES, line_too_long, prefix
from ..._formats.encoding import Encodable
from ..secret import Secret
from .base import Inputs, Layer, secrets_identity

if TYPE_CHECKING:
    from ..._formats.dockerfile import Instructions


# What the Flyte SDK's default image installs with apt on top of the Python base.
BASE_APT_PACKAGES = ("build-essential", "ca-certificates")


@dataclass(frozen=True)
class DebianBase(Layer):
    """The environment `from_debian_base` prepares, laid out as the Flyte SDK's default image
    (the `flyte` user, WORKDIR /home/flyte, PYTHONPATH=/root, /opt/venv on PATH). `published`:
    the base is the SDK's published default image, which has all of that and `flyte`, and
    nothing is built; else it is built from `dockerfiles/debian-base.Dockerfile` (its bytes are
    in the identifier), the SDK's apt packages and, with `install_flyte`, `flyte`."""

    KIND: ClassVar[str] = "debian_base"
    install_flyte: bool = True
    flyte_version: str | None = None
    published: bool = False

    def identity(self, inputs: Inputs) -> Encodable:
        mode = "published" if self.published else "built"
        return (self.KIND, mode, self.install_flyte, self.flyte_version)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        if index != 0:
            raise LayerNotAllowedError("the Debian base environment must be the first layer")
        if self.published:
            out.published_base()
            return
        out.base_environment()
        AptPackages(packages=BASE_APT_PACKAGES).render(out, inputs, index)
        if self.install_flyte:
            spec = f"flyte=={self.flyte_version}" if self.flyte_version else "flyte"
            out.run_step(out.uv_install(None, [q.shell_word(spec)]), [out.UV_CACHE])


@dataclass(frozen=True)
class AptPackages(Layer):
    KIND: ClassVar[str] = "apt"
    packages: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.packages, secrets_identity(self.secret_mounts))

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        ca = f" -o Acquire::https::CAInfo={out.CA_PATH}" if out.options.ca_bundle else ""
        names = q.shell_join(q.shell_word(p) for p in self.packages)
        script = (
            "rm -f /etc/apt/apt.conf.d/docker-clean"
            f" && apt-get update -q{ca}"
            f" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends{ca} {names}"
        )
        out.run_step(script, list(out.APT_CACHE), self.secret_mounts)


# BuildKit refuses a Dockerfile line over 64 KiB, on the engine route only: the layers below whose
# arguments render into one line of unbounded length check it when made, so every route refuses
# the same image at the same place.
@dataclass(frozen=True)
class Env(Layer):
    KIND: ClassVar[str] = "env"
    env_vars: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        size = len(self._line().encode("utf-8"))
        if size <= MAX_LINE_BYTES:
            return
        name, value = max(self.env_vars, key=lambda pair: len(pair[1].encode("utf-8")))
        what = f"{name}={prefix(value)} ({len(value)} characters)"
        if len(f"ENV {name}={q.dockerfile_dq(value)}".encode()) > MAX_LINE_BYTES:
            fix = f"put a value that long in a file (with_source_file) and read it at run time instead of {name}"
        else:
            what = f"the {len(self.env_vars)} variables together (the longest {what})"
            fix = "split them over several with_env_vars calls (each is one ENV line)"
        raise line_too_long("env_vars", size, what, fix)

    def _line(self) -> str:
        return "ENV " + " ".join(f"{k}={q.dockerfile_dq(v)}" for k, v in self.env_vars)

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.env_vars)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.add(self._line())


@dataclass(frozen=True)
class WorkDir(Layer):
    KIND: ClassVar[str] = "workdir"
    workdir: str = "/"

    def __post_init__(self) -> None:
        size = len(f"WORKDIR {q.dockerfile_dq(self.workdir)}".encode())
        if size > MAX_LINE_BYTES:
            what = f"{prefix(self.workdir)} ({len(self.workdir)} characters)"
            raise line_too_long("workdir", size, what, "give a shorter path")

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.workdir)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.add(f"WORKDIR {q.dockerfile_dq(self.workdir)}")


@dataclass(frozen=True)
class Commands(Layer):
    KIND: ClassVar[str] = "commands"
    commands: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    # What the renderer may add to a command's RUN line besides its JSON text: `RUN ` or the
    # continuation indent, and the exports of the CA bundle (a build option, unknown here).
    # Each secret read into a variable adds its own assignment, counted per secret below.
    RUN_RESERVE: ClassVar[int] = 512

    def __post_init__(self) -> None:
        reserve = self.RUN_RESERVE + sum(
            2 * len(f'{s.as_env_var or s.source_env_var}="$(cat /run/secrets/{s.build_id})" && export X && ')
            + 2 * len(s.as_env_var or s.source_env_var)
            for s in self.secret_mounts
        )
        for number, command in enumerate(self.commands, 1):
            size = len(q.exec_form(command)) + reserve  # exec_form is ASCII: characters are bytes
            if size > MAX_LINE_BYTES:
                what = f"command {number} {prefix(command)} ({len(command)} characters)"
                fix = "put a script that long in a file (with_source_file) and run the file"
                raise line_too_long("commands", size, what, fix)

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.commands, secrets_identity(self.secret_mounts))

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        for command in self.commands:
            out.run_step(command, [], self.secret_mounts)
