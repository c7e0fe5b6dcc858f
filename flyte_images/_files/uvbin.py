"""The uv binary copied into images, per target platform, without any container registry.

uv's wheel is fetched from the Python package index on the host (`pip download`: the user's pip
configuration applies), its static binary cached per version and architecture and staged as
`_fi/uv/<TARGETARCH>/uv`. The version is pinned (UV_VERSION, part of every identifier). Before a
build, the same uv checks that a project's uv.lock still matches its pyproject.toml (`check_lock`).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from .._config import _tomllib
from .._errors import BuildError, InvalidLayerArgument, SourceError
from .statcache import cache_dir

UV_VERSION = "0.13.9"

# Docker platform -> (TARGETARCH, wheel platform tag). Static musl builds where uv ships them,
# so the binary runs on glibc and musl bases alike.
_WHEEL_PLATFORMS: dict[str, tuple[str, str]] = {
    "linux/amd64": ("amd64", "musllinux_1_1_x86_64"),
    "linux/arm64": ("arm64", "musllinux_1_1_aarch64"),
    "linux/arm/v7": ("arm", "musllinux_1_1_armv7l"),
    "linux/386": ("386", "musllinux_1_1_i686"),
    "linux/ppc64le": ("ppc64le", "manylinux_2_17_ppc64le"),
    "linux/s390x": ("s390x", "manylinux_2_17_s390x"),
    "linux/riscv64": ("riscv64", "manylinux_2_31_riscv64"),
}


def target_arch(platform: str) -> str:
    try:
        return _WHEEL_PLATFORMS[platform][0]
    except KeyError:
        supported = ", ".join(_WHEEL_PLATFORMS)
        raise InvalidLayerArgument(
            "platform",
            f"uv has no build for {platform}; platforms that can install Python packages: {supported}",
        ) from None


def uv_binary(platform: str, version: str = UV_VERSION) -> Path:
    """Path of a cached uv binary for `platform`, downloading uv's wheel the first time."""
    arch = target_arch(platform)
    tag = _WHEEL_PLATFORMS[platform][1]
    target = cache_dir() / "uv" / version / arch / "uv"
    if target.is_file() and not target.is_symlink():  # never a link: staging copies it into images
        return target
    import shutil  # here: a plan whose uv is cached (every one but the first) never needs these
    import subprocess
    import tempfile
    import zipfile

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if any(p.is_symlink() for p in (target.parent, target.parent.parent, target.parent.parent.parent)):
            raise BuildError(f"{target.parent} goes through a symlink; remove it (the tool makes it again)")
    except OSError as exc:
        raise BuildError(
            f"cannot write the uv cache in {target.parent} ({exc.strerror}); make the cache folder writable, "
            "or point FLYTE_IMAGES_CACHE_DIR at a folder that is"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="fi-uv-", dir=target.parent) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--platform", tag, "--python-version", "3.12", f"uv=={version}", "--dest", tmp,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("uv-*.whl"))
        if result.returncode != 0 or not wheels:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise BuildError(
                f"could not download uv {version} for {platform} from the package index "
                f"(`{' '.join(command[2:])}` failed):\n{tail}\n"
                "check network access to your package index (pip's configuration applies)"
            )
        member = f"uv-{version}.data/scripts/uv"
        extracted = Path(tmp) / "uv"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, open(extracted, "wb") as dst:
            shutil.copyfileobj(src, dst)
        extracted.chmod(0o755)
        os.replace(extracted, target)  # atomic: a build that fetched it meanwhile is replaced whole
    return target


# `platform.machine()` of a Linux host -> the Docker platform whose uv build runs on it.
_HOST_PLATFORMS = {
    "x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64",
    "armv7l": "linux/arm/v7", "i686": "linux/386", "i386": "linux/386", "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x", "riscv64": "linux/riscv64",
}  # fmt: skip


def host_uv() -> Path | None:
    """A uv this machine can run: on Linux the pinned one (the uv that reads the lock inside the
    build, so both agree on it), elsewhere or when it cannot be fetched the `uv` on PATH."""
    import platform
    import shutil

    target = _HOST_PLATFORMS.get(platform.machine().lower()) if sys.platform.startswith("linux") else None
    if target is not None:
        try:
            return uv_binary(target)
        except BuildError:
            pass
    found = shutil.which("uv")
    return Path(found) if found else None


_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)\S*@")


def check_lock(pyproject: Path, lock: Path) -> None:
    """Refuse a uv.lock that no longer matches its pyproject.toml, as `uv sync --locked` does.

    `uv lock --locked --offline` in the project's folder validates the lock (the project's uv
    configuration applies), never writes it, and reads nothing from the network; a stale lock
    is resolved again from uv's cache alone, which shows it changes ("needs to be updated") or
    cannot succeed ("No solution found"): both exit 1. Anything else (no uv, a uv too old for
    these flags, metadata needing a build backend not in the cache) is a warning, and the build
    goes on with the lock as it is."""
    import subprocess
    import warnings

    folder = pyproject.parent
    skipped = f"could not check that {lock} matches {pyproject}"
    uv = host_uv()
    if uv is None:
        warnings.warn(f"{skipped}: no uv on this machine (install uv); building with the lock as it is", stacklevel=3)
        return
    # This process's Python, when the project accepts it: otherwise uv searches PATH for one,
    # and running the interpreters it finds there (shims) can cost more than the whole check.
    # The lock is universal, so the interpreter does not change the answer; if uv refuses it
    # (a workspace member may ask for a newer Python), uv is asked again to find its own.
    attempts = [["--python", sys.executable], []] if _fits(pyproject) else [[]]
    env = {**os.environ, "NO_COLOR": "1"}
    for extra in attempts:
        command = [str(uv), "lock", "--locked", "--offline", *extra]
        try:
            result = subprocess.run(
                command, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            warnings.warn(f"{skipped}: running {uv} failed ({exc}); building with the lock as it is", stacklevel=3)
            return
        if result.returncode != 2:  # 2: uv could not do what was asked (1: it did, and the lock failed)
            break
    if result.returncode == 0:
        return
    output = f"{result.stdout}\n{result.stderr}"
    stale = "needs to be updated" in output or "No solution found when resolving dependencies" in output
    if result.returncode == 1 and stale:
        raise SourceError(
            f"{lock} does not match {pyproject} (`uv sync --locked` refuses it too): the project's requirements "
            f"changed since the lock was made, and the image would install what the old lock pins. "
            f"Run `uv lock` in {folder} and build again"
        )
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(("error:", "cause:"))]
    # uv may name an index URL from the user's configuration: never show its user:password.
    detail = _CREDENTIALS.sub(r"\1***@", " ".join(lines[:3])) or f"exit code {result.returncode}"
    warnings.warn(
        f"{skipped}: `uv lock --locked --offline` ({uv}) failed: {detail}; building with the lock as it is",
        stacklevel=3,
    )


def _fits(pyproject: Path) -> bool:
    """Whether this Python meets the project's `requires-python` (none: any does)."""
    import platform

    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    tomllib = _tomllib()
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project")
        wanted = project.get("requires-python") if isinstance(project, dict) else None
        return wanted is None or SpecifierSet(str(wanted)).contains(platform.python_version(), prereleases=True)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, InvalidSpecifier):
        return False
