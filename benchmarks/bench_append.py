"""Append benchmark: edit one source file, build and push to a registry on loopback.

Image: a busybox base in the registry + one RUN (the engine part) + a 300-file source folder and
an env var (the file part). Each figure is the median of --repeat runs (min and max beside it);
ratios are taken in the same run:
  one platform     edit one file, `flyte-images build` in a new process: the file part is
                   appended to the engine part in the registry (no engine involved)
    floor          edit the same file in a fixed folder holding the same Dockerfile and
                   context, `docker buildx build --push` of it (the Docker engine's driver)
  two platforms    the same for linux/amd64 + linux/arm64
    floor          `docker buildx build --platform linux/amd64,linux/arm64 --push` of the fixed
                   folder through buildkitd (fixtures/engine/buildkit.sh), which builds both
Ours runs as users run it: the `flyte-images` program, each command in its own process.
Needs the engine (fixtures/engine/setup.sh: dockerd, docker-registry, buildkitd, emulation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
# The `flyte-images` program users run (the console script beside this Python), else `-m`.
_SCRIPT = Path(sys.executable).parent / "flyte-images"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "flyte_images._cli"]
BOTH = ("linux/amd64", "linux/arm64")
BUILDKIT_ENV = Path("/var/lib/flyte-images-engine/buildkit/env")


def run(command: list[str], **kw: object) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout  # type: ignore[no-any-return]


def project(root: Path, base: str, registry: str, name: str, platforms: tuple[str, ...]) -> Path:
    from bench_build import source_tree  # the same 300-file folder as the build benchmark

    source_tree(root)
    (root / "images.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"app = (Image.from_base({base!r}).clone(name={name!r}, registry={registry!r}, platform={platforms!r})\n"
        f"       .with_commands(['uname -m > /arch; echo {uuid.uuid4().hex} > /marker'])\n"
        "       .with_source_folder(Path(__file__).parent / 'src', dst='/app')\n"
        "       .with_env_vars({'APP_MODE': 'bench'}))\n"
    )
    return root


def edit(path: Path) -> None:
    path.write_text(f"VALUE = {uuid.uuid4().hex!r}\n")


def timed(fn: object, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return times


def measure(root: Path, floor_command: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Ours (edit, new process) and the floor (edit the fixed folder, buildx --push)."""
    images = str(root / "images.py")
    run([*CLI, "build", images, "-q"])  # the engine part is built and pushed once
    fixed = root / "fixed"
    shutil.rmtree(fixed, ignore_errors=True)
    run([*CLI, "dockerfile", f"{images}:app", "--context", str(fixed)])
    (fixed_file,) = fixed.glob("_fi/*/src/m000.py")
    run([*floor_command, str(fixed)])  # warm: the RUN step is in BuildKit's cache

    def ours() -> None:
        edit(root / "src" / "m000.py")
        out = run([*CLI, "build", images, "--json", "-q"])
        assert '"built"' in out, out

    def floor() -> None:
        edit(fixed_file)
        run([*floor_command, str(fixed)])

    ours_times, floor_times = [], []
    for _ in range(repeat):  # interleaved: both see the same machine load
        ours_times += timed(ours, 1)
        floor_times += timed(floor, 1)
    return ours_times, floor_times


def line(label: str, times: list[float], floor: list[float] | None = None) -> str:
    med = statistics.median(times)
    ratio = f"  {med / statistics.median(floor):5.2f}x" if floor else ""
    return f"{label:<15} {med:7.3f}s  (min {min(times):.3f}, max {max(times):.3f}){ratio}"


def buildkit_builder() -> str:
    values = dict(line.split("=", 1) for line in BUILDKIT_ENV.read_text().splitlines() if "=" in line)
    os.environ["FLYTE_IMAGES_BUILDKIT_ADDR"] = values["BUILDKIT_UNIX_ADDR"]
    from flyte_images.builders.buildkit import BuildkitBuilder, ensure_builder

    return ensure_builder(BuildkitBuilder().settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from bench_multiarch import problem, push_base
    from engine_support import docker, registry

    found = problem()
    if found:
        sys.exit(f"append benchmark needs the engine: {found}")
    if not BUILDKIT_ENV.is_file():
        sys.exit(f"append benchmark needs buildkitd: {BUILDKIT_ENV} is missing (run fixtures/engine/buildkit.sh)")
    os.environ.setdefault("FLYTE_IMAGES_CACHE_DIR", tempfile.mkdtemp(prefix="fi-bench-append-"))
    with registry() as reg:
        single_base = f"{reg.host}/bench-bases/busybox:amd64"
        both_base = push_base(reg.host, "busybox")  # pushes the amd64 one (single_base) too
        docker("pull", single_base)
        tmp = Path(tempfile.mkdtemp(prefix="fi-bench-append-"))
        one = project(tmp / "one", single_base, reg.host, "bench-append", ("linux/amd64",))
        push = ["docker", "buildx", "build", "--push", "-q", "-t", f"{reg.host}/bench-append-floor:latest"]
        ours1, floor1 = measure(one, push, args.repeat)
        two = project(tmp / "two", both_base, reg.host, "bench-append-two", BOTH)
        push2 = [
            "docker", "buildx", "build", "--builder", buildkit_builder(), "--platform", ",".join(BOTH),
            "--output", "type=registry,oci-mediatypes=true", "--provenance=false", "-q",
            "-t", f"{reg.host}/bench-append-floor2:latest",
        ]  # fmt: skip
        ours2, floor2 = measure(two, push2, args.repeat)
        shutil.rmtree(tmp, ignore_errors=True)
    print("append benchmark: edit one file, build and push (median of runs; ratio to the floor)")
    print("every command in its own process")
    print(line("one platform", ours1, floor1))
    print(line("  buildx --push", floor1))
    print(line("two platforms", ours2, floor2))
    print(line("  buildkitd", floor2))
    goals = [
        ("one platform <= 0.3x", statistics.median(ours1) <= 0.3 * statistics.median(floor1)),
        ("two platforms <= 0.15x", statistics.median(ours2) <= 0.15 * statistics.median(floor2)),
    ]
    print("goals: " + ", ".join(f"{name} ({'met' if ok else 'MISSED'})" for name, ok in goals))


if __name__ == "__main__":
    main()
