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


# What the Flyte SDK's default image installs with apt on top of the Python base.
BASE_APT_PACKAGES = ("build-essential", "ca-certificates")


@dataclass(frozen=True)
class DebianBase(Layer):
    """The environment `from_debian_base` prepares, laid out as the Flyte SDK's default image
    (the `flyte` user, WORKDIR /home/flyte, PYTHONPATH=/root, /opt/venv on PATH).

    `published`: the base image is the SDK's published default image (`ghcr.io/flyteorg/flyte:
    py3.X-vVERSION`), which has all of that and `flyte`; nothing of it is built, the layers after
    it build FROM it. Otherwise the environment is built from the base template
    (`dockerfiles/debian-base.Dockerfile`, whose bytes are part of the identifier), the apt
    packages the SDK adds, and with `install_flyte` the `flyte` package from the index."""

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
