"""`flyte-images doctor`: is everything a build needs on this machine? One line per check.

The checks ask as a build would, without building: the docker CLI for the engine (it knows
contexts, TLS and SSH hosts), the buildx plugin, a socket or TLS connection to a BuildKit
daemon, each registry's /v2/ endpoint with the credential Docker's config holds for it, the
kernel's binfmt_misc handlers, and the CA bundle file. Nothing is created or changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

from ._common import add_command

EXIT_MISSING = 1
_TIMEOUT = 20.0
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# QEMU's program names -> the architecture a platform names (linux/<arch>).
_QEMU_ARCH = {
    "aarch64": "arm64", "arm": "arm", "x86_64": "amd64", "i386": "386", "riscv64": "riscv64",
    "ppc64le": "ppc64le", "s390x": "s390x", "mips64el": "mips64le", "mips64": "mips64", "loongarch64": "loong64",
}  # fmt: skip

_HELP = """\
Check, one line each, what a build needs and say what is missing: the Docker engine (and
where: DOCKER_HOST or the docker context), the docker buildx plugin, the BuildKit daemon (when
the buildkit builder or FLYTE_IMAGES_BUILDKIT_ADDR is set), each registry (the configured one
and every --registry): does it answer /v2/, and is there a credential for it in Docker's
config or its credential helper, QEMU emulation for foreign platforms, and the CA bundle
(--ca-bundle or FLYTE_IMAGES_CA_BUNDLE). Nothing is built or changed.

Each line starts with ok, warn (not needed by every build), skip (not used) or fail.

exit codes: 0 nothing a build needs is missing, 1 something is (a `fail` line)

examples:
  flyte-images doctor
  flyte-images doctor --registry ghcr.io/acme --json
  DOCKER_HOST=ssh://builder flyte-images doctor
"""


class Check(NamedTuple):
    name: str
    status: str  # ok, warn, skip, fail
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def register(commands: Any) -> None:
    parser = add_command(commands, "doctor", "check that what a build needs is there", _HELP)
    parser.add_argument(
        "--registry", action="append", default=[], metavar="REGISTRY", help="also check this registry (repeatable)"
    )
    parser.add_argument("--builder", help="check for this backend (default: the configured one, else docker)")
    parser.add_argument("--ca-bundle", metavar="PATH", help="check this CA bundle (default: FLYTE_IMAGES_CA_BUNDLE)")
    parser.add_argument("--json", action="store_true", help="one JSON document with every check")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import _config
    from .._errors import ConfigError

    problems: list[Check] = []
    try:
        builder = args.builder or _config.configured_builder() or "docker"
        registries = [r for r in [_config.configured_registry(), *args.registry] if r]
    except ConfigError as exc:
        builder, registries = args.builder or "docker", list(args.registry)
        problems.append(Check("config", "fail", str(exc)))
    builder = {"local": "docker"}.get(builder, builder)
    checks = [
        *problems,
        _engine(needed=builder == "docker" or not registries),
        _buildx(needed=builder in ("docker", "buildkit")),
        _buildkitd(builder),
        *[_registry(r) for r in dict.fromkeys(registries)],
        _emulation(),
        _ca_bundle(args.ca_bundle),
    ]
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        import json

        print(json.dumps({"ok": not failed, "builder": builder, "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            print(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
    return EXIT_MISSING if failed else 0


def _docker(*arguments: str) -> subprocess.CompletedProcess[str] | str:
    """The docker command's result, or why it could not be run."""
    program = shutil.which("docker")
    if program is None:
        return "the docker command is not installed (Debian: apt-get install docker.io; or Docker's docker-ce-cli)"
    try:
        return subprocess.run(
            [program, *arguments],
            capture_output=True, text=True, check=False, timeout=_TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"`docker {' '.join(arguments)}` did not finish within {_TIMEOUT:g} s"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def _engine_place() -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"DOCKER_HOST={host}"
    context = os.environ.get("DOCKER_CONTEXT")
    if context and context != "default":
        return f"docker context {context} (DOCKER_CONTEXT)"
    import json

    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        current = json.loads(config.read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        current = None
    if isinstance(current, str) and current not in ("", "default"):
        return f"docker context {current} (docker context use)"
    return "unix:///var/run/docker.sock"


def _engine(*, needed: bool) -> Check:
    where = _engine_place()
    done = _docker("version", "--format", "{{.Server.Version}} {{.Server.Os}}/{{.Server.Arch}}")
    if isinstance(done, str):
        return Check("engine", "fail" if needed else "warn", done)
    if done.returncode != 0 or not done.stdout.strip():
        said = _last_line(done.stderr)
        if "permission denied" in said.lower():
            fix = "add your user to the docker group (usermod -aG docker $USER, then log in again) or run as root"
        elif where.startswith("DOCKER_HOST"):
            fix = "fix DOCKER_HOST, or unset it to use the local engine"
        else:
            fix = "start it (systemctl start docker)"
        if not needed:
            fix += "; needed only to load images into the local engine"
        return Check("engine", "fail" if needed else "warn", f"no Docker engine answers at {where}: {said}; {fix}")
    version, _, platform = done.stdout.strip().partition(" ")
    return Check("engine", "ok", f"Docker {version} ({platform}) at {where}")


def _buildx(*, needed: bool) -> Check:
    done = _docker("buildx", "version")
    if isinstance(done, str):
        return Check("buildx", "fail" if needed else "warn", done)
    if done.returncode != 0:
        return Check(
            "buildx",
            "fail" if needed else "warn",
            "the docker buildx plugin is missing: install it (Debian trixie or newer: apt-get install docker-buildx; "
            "Docker's packages: docker-buildx-plugin)",
        )
    return Check("buildx", "ok", done.stdout.strip().splitlines()[0] if done.stdout.strip() else "installed")


def _buildkitd(builder: str) -> Check:
    from .. import _config
    from .._build.backends import get_builder

    settings = _config.configured_buildkit()
    named = settings.addr != _config.DEFAULT_BUILDKIT_ADDR or _config.configured_buildkit_nodes() is not None
    if builder != "buildkit" and not named:
        return Check("buildkitd", "skip", f"not used: the builder is {builder} (FLYTE_IMAGES_BUILDKIT_ADDR names none)")
    # The backend says what stops it, as its builds would find it (each node of a pool).
    problems: list[str] = getattr(get_builder("buildkit"), "diagnose", list)()
    if not problems:
        tls = " with TLS" if settings.addr.startswith("tcp://") and (settings.ca or settings.cert) else ""
        return Check("buildkitd", "ok", f"{settings.addr} answers{tls}")
    needed = builder == "buildkit"
    fix = "" if needed else " (not the configured builder)"
    return Check("buildkitd", "fail" if needed else "warn", "; ".join(problems) + fix)


def _registry(name: str) -> Check:
    from .._interrupt import run_coroutine
    from .._registry.redact import by_shape, one_line

    try:
        return run_coroutine(_ask_registry(name))
    except Exception as exc:  # the doctor reports; a traceback helps no one here
        return Check(f"registry {name}", "fail", one_line(by_shape(str(exc))))


async def _ask_registry(name: str) -> Check:
    """Is there a credential for the registry, and does its /v2/ answer (with it, when one)?"""
    from .. import _config
    from .._errors import RegistryError
    from .._registry import Registry, parse_reference
    from .._registry.auth import credentials_for
    from .._registry.redact import one_line

    label = f"registry {name}"
    ref = parse_reference(f"{name.rstrip('/')}/flyte-images-doctor:probe")
    try:
        credential = credentials_for(ref.host) is not None
    except RegistryError as exc:
        return Check(label, "fail", one_line(str(exc)))
    stored = "a credential stored" if credential else "no credential stored"
    async with Registry(insecure=_config.insecure_registries()) as registry:
        try:
            answer = await registry.send(ref, "GET", f"{registry.base(ref.host)}/", limit=64 * 1024)
        except RegistryError as exc:
            return Check(label, "fail", f"{one_line(str(exc))} ({stored})")
    if answer.status == 200:
        return Check(label, "ok", f"{ref.host} answers /v2/ ({stored})")
    if answer.status == 401 and not credential:
        return Check(label, "fail", f"{ref.host} needs credentials (401) and none is stored: docker login {ref.host}")
    if answer.status in (401, 403):
        return Check(
            label, "fail", f"{ref.host} refused the stored credential ({answer.status}): docker login {ref.host}"
        )
    return Check(label, "fail", f"{ref.host} answered {answer.status} for /v2/, not an OCI registry's answer")


def _emulation(binfmt: Path = BINFMT_DIR) -> Check:
    """QEMU handlers the kernel runs foreign programs with (fix-binary, so containers can)."""
    import platform

    if os.environ.get("DOCKER_HOST", "unix://").split("://")[0] not in ("unix", ""):
        return Check("emulation", "skip", "the engine is not on this machine: its kernel's emulators cannot be seen")
    native = _QEMU_ARCH.get(platform.machine(), platform.machine())
    status = binfmt / "status"
    try:
        enabled = status.read_text().strip() == "enabled"
    except OSError:
        enabled = False
    usable = []
    if enabled:
        for entry in sorted(binfmt.iterdir()):
            try:
                text = entry.read_text()
            except OSError:
                continue
            qemu = next((q for q in _QEMU_ARCH if entry.name in (f"qemu-{q}", f"qemu-{q}-static")), None)
            flags = next((line[6:] for line in text.splitlines() if line.startswith("flags:")), "")
            if qemu and text.startswith("enabled") and "F" in flags and _QEMU_ARCH[qemu] != native:
                usable.append(_QEMU_ARCH[qemu])
    if usable:
        return Check("emulation", "ok", f"QEMU for linux/{', linux/'.join(usable)}: foreign platforms' RUN steps run")
    return Check(
        "emulation",
        "warn",
        f"no QEMU emulation registered in {binfmt}: only linux/{native} images can run RUN steps here; enable it "
        "(apt-get install qemu-user-static binfmt-support, or docker run --privileged --rm tonistiigi/binfmt "
        "--install all) to build for other platforms",
    )


def _ca_bundle(given: str | None) -> Check:
    from .. import _config

    value = given or _config.configured_ca_bundle()
    source = "--ca-bundle" if given else "FLYTE_IMAGES_CA_BUNDLE (or ca_bundle in the config file)"
    if not value:
        return Check("ca-bundle", "ok", "none set (needed only behind a TLS-inspecting proxy: --ca-bundle)")
    path = Path(value).expanduser()
    try:
        text = path.read_bytes()[: 16 << 20]
    except OSError as exc:
        return Check("ca-bundle", "fail", f"{path} from {source} cannot be read ({exc.strerror}); builds would fail")
    count = text.count(b"-----BEGIN CERTIFICATE-----")
    if count == 0:
        return Check(
            "ca-bundle", "fail", f"{path} from {source} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
    return Check("ca-bundle", "ok", f"{path} from {source}: {count} certificate(s)")
