"""Layers that shape the system: the Debian base environment, apt packages, environment
variables, the working folder and shell commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .. import _quote as q
from .._encoding import Encodable
from .._errors import LayerNotAllowedError
from .._secret import Secret
from .base import Inputs, Layer, secrets_identity

if TYPE_CHECKING:
    from .._render import Instructions


@dataclass(frozen=True)
class DebianBase(Layer):
    """The environment `from_debian_base` prepares: uv, a virtual environment of the image's
    Python version on PATH, and optionally the `flyte` package. Rendered from the base template
    (`dockerfiles/debian-base.Dockerfile`, whose bytes are part of the identifier)."""

    KIND: ClassVar[str] = "debian_base"
    install_flyte: bool = True
    flyte_version: str | None = None

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.install_flyte, self.flyte_version)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        if index != 0:
            raise LayerNotAllowedError("the Debian base environment must be the first layer")
        out.base_environment()
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


@dataclass(frozen=True)
class Env(Layer):
    KIND: ClassVar[str] = "env"
    env_vars: tuple[tuple[str, str], ...] = ()

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.env_vars)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.add("ENV " + " ".join(f"{k}={q.dockerfile_dq(v)}" for k, v in self.env_vars))


@dataclass(frozen=True)
class WorkDir(Layer):
    KIND: ClassVar[str] = "workdir"
    workdir: str = "/"

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.workdir)

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        out.add(f"WORKDIR {q.dockerfile_dq(self.workdir)}")


@dataclass(frozen=True)
class Commands(Layer):
    KIND: ClassVar[str] = "commands"
    commands: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def identity(self, inputs: Inputs) -> Encodable:
        return (self.KIND, self.commands, secrets_identity(self.secret_mounts))

    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        for command in self.commands:
            out.run_step(command, [], self.secret_mounts)
