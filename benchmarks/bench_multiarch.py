"""Multi-platform benchmark: one amd64+arm64 build next to the two single-platform builds.

On an engine that builds one platform at a time (dockerd 20.10, classic store, buildx `docker`
driver) the Docker backend builds each platform on its own, `FLYTE_IMAGES_PLATFORM_CONCURRENCY`
at a time, pushes each and writes one image index. This prints, for the same image pushed to a
registry on loopback:

    the multi-platform build (concurrency 2, the default, and 1),
    the sum of the single-platform builds (amd64 alone + arm64 alone).

Every build is a real one: each gets its own marker in a RUN step, so BuildKit reuses only what
any build would (the base, uv's download cache), never the measured steps. arm64 runs under QEMU.
Needs fixtures/engine/setup.sh and fixtures/engine/multiarch.sh (root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BOTH = ("linux/amd64", "linux/arm64")
ARM64_BASES = {"busybox": "flyte-images/busybox:test-arm64", "python": "python:3.11-slim-bookworm-arm64"}
AMD64_BASES = {"busybox": "flyte-images/busybox:test", "python": "python:3.11-slim-bookworm"}


def problem() -> str | None:
    from engine_support import engine_problem

    from flyte_images.builders._multiarch import binfmt_problem

    found = engine_problem()
    if found:
        return f"{found} (run fixtures/engine/setup.sh)"
    emulation = binfmt_problem("linux/arm64")
    if emulation:
        return f"{emulation} (run fixtures/engine/multiarch.sh as root)"
    for base in ARM64_BASES.values():
        inspect = ["docker", "image", "inspect", "--format", "{{.Architecture}}", base]
        if subprocess.run(inspect, capture_output=True, text=True, check=False).stdout.strip() != "arm64":
            return f"the arm64 base {base} is missing (run fixtures/engine/multiarch.sh as root)"
    return None


def push_base(registry: str, kind: str) -> str:
    """The amd64 and arm64 bases of `kind` as one index in the registry; its reference."""
    from engine_support import docker

    from flyte_images._registry import push_index

    parts = {}
    for platform, local in (("linux/amd64", AMD64_BASES[kind]), ("linux/arm64", ARM64_BASES[kind])):
        ref = f"{registry}/bench-bases/{kind}:{platform.split('/')[1]}"
        docker("tag", local, ref)
        docker("push", ref)
        parts[platform] = ref
    asyncio.run(push_index(f"{registry}/bench-bases/{kind}:multi", parts))
    return f"{registry}/bench-bases/{kind}:multi"


def image_maker(kind: str, base: str, registry: str, source: Path) -> Callable[[tuple[str, ...]], object]:
    """A function giving the benchmark image for some platforms, with a fresh marker each time."""
    from flyte_images import Image

    def make(platforms: tuple[str, ...]) -> object:
        marker = f"echo {uuid.uuid4()} > /marker"
        if kind == "busybox":
            image = Image.from_base(base).clone(name="bench-multi", registry=registry, platform=platforms)
            work = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"  # CPU work: what QEMU slows down
            return image.with_source_folder(source, dst="/srv").with_commands([marker, work])
        os.environ["FLYTE_IMAGES_BASE_IMAGE"] = base
        image = Image.from_debian_base(python_version=(3, 11), install_flyte=False, registry=registry, name="bench-py")
        return image.clone(platform=platforms).with_commands([marker]).with_pip_packages("six==1.16.0", "idna==3.7")

    return make


def timed(build: Callable[[], object]) -> float:
    start = time.perf_counter()
    build()
    return time.perf_counter() - start


def measure(make: Callable[[tuple[str, ...]], object], repeat: int) -> dict[str, float]:
    import flyte_images

    def build(platforms: tuple[str, ...], concurrency: int = 2) -> Callable[[], object]:
        def run() -> object:
            os.environ["FLYTE_IMAGES_PLATFORM_CONCURRENCY"] = str(concurrency)
            return flyte_images.build(make(platforms), force=True, quiet=True)  # type: ignore[arg-type]

        return run

    build(BOTH)()  # warm: bases pulled into BuildKit, uv fetched, caches filled
    runs: dict[str, list[float]] = {"amd64": [], "arm64": [], "both, 2 at once": [], "both, 1 at a time": []}
    for _ in range(repeat):
        runs["amd64"].append(timed(build(("linux/amd64",))))
        runs["arm64"].append(timed(build(("linux/arm64",))))
        runs["both, 2 at once"].append(timed(build(BOTH, 2)))
        runs["both, 1 at a time"].append(timed(build(BOTH, 1)))
    return {name: min(times) for name, times in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", choices=("python", "busybox"), default="python")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    found = problem()
    if found:
        sys.exit(f"multi-platform benchmark needs the engine with emulation: {found}")
    from engine_support import registry, set_ca_env

    set_ca_env()
    with registry() as reg:
        base = push_base(reg.host, args.image)
        with tempfile.TemporaryDirectory(prefix="bench-multi-") as folder:
            source = Path(folder) / "app"
            source.mkdir()
            (source / "app.py").write_text("print('hello')\n" * 100)
            best = measure(image_maker(args.image, base, reg.host, source), args.repeat)
    single = best["amd64"] + best["arm64"]
    print(f"multi-platform build of the {args.image} image, pushed to {reg.host}, best of {args.repeat}:")
    print(f"  {'amd64 alone':<34} {best['amd64']:7.2f} s")
    print(f"  {'arm64 alone (QEMU)':<34} {best['arm64']:7.2f} s")
    print(f"  {'sum of the single-platform builds':<34} {single:7.2f} s")
    for name in ("both, 2 at once", "both, 1 at a time"):
        label = "amd64+arm64 " + name.removeprefix("both, ")
        print(f"  {label:<34} {best[name]:7.2f} s  {best[name] / single:5.2f}x the sum")


if __name__ == "__main__":
    main()
