"""The uv binary copied into images, per target platform, without any container registry.

The original tool copied uv from `ghcr.io/astral-sh/uv`, which needs registry access. Here the
builder fetches uv's own wheel from the Python package index on the host (`pip download`, so
the user's pip configuration, mirrors and certificates apply), extracts the static binary, and
stages it into the build context as `_fi/uv/<TARGETARCH>/uv`. Binaries are cached under the
user cache folder per version and architecture. The version is pinned (UV_VERSION, part of
every identifier), so every machine puts the same uv into the same image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ._errors import BuildError, InvalidLayerArgument
from ._statcache import cache_dir

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
    if target.is_file():
        return target
    import contextlib  # here: a plan whose uv is cached (every one but the first) never needs these
    import shutil
    import subprocess
    import tempfile
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
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
        with contextlib.suppress(FileExistsError):
            os.replace(extracted, target)
    return target
