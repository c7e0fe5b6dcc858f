"""Build benchmark on the local engine: the edit-rebuild loop, cold builds and no-op builds.

Image: from_debian_base + apt (curl) + pip (six) + a 300-file source folder. Each figure is the
median of --repeat runs (--id-repeat for the id rows), min and max beside it; ratios are taken
in the same run:
  edit rebuild   edit one source file, `flyte-images build` in a new process (taking turns
                 with the floor)
    floor        edit the same file in a fixed folder holding the same Dockerfile and context,
                 `docker buildx build --load` of it (what any tool must at least pay)
  cold build     a new apt package and pip package (no layer cache for them), ours
    hand-written the same result from a hand-written Dockerfile, plain `docker buildx build`
  no-op build    `flyte-images build` in a new process, the image already there
  id (warm)      `flyte-images id` of the 10k-file tree in a new process, stat cache warm
    stat floor   one stat per folder and file of that tree, in-process (ratio: the median
                 of five blocks' ratios, each block five runs of each)
Commands run as users run them: the `flyte-images` program, each in its own process.
Needs the engine (fixtures/engine/setup.sh) and, behind a TLS-inspecting proxy, the host's CA
bundle (FLYTE_IMAGES_CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt).
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
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
CA = os.environ.get("FLYTE_IMAGES_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
# The `flyte-images` program users run (the console script beside this Python), else `-m`.
_SCRIPT = Path(sys.executable).parent / "flyte-images"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "flyte_images._cli"]


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(command: list[str], **kw: object) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout  # type: ignore[no-any-return]


def source_tree(root: Path) -> None:
    """The 300-file source folder of the benchmark images, at root/src."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(300):
        (src / f"m{i:03d}.py").write_text(f"VALUE = {i}\n" * 20)


def project(root: Path, apt: str, pip: str, name: str, bust: str = "") -> Path:
    source_tree(root)
    (root / "images.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"app = (Image.from_debian_base(python_version=(3, 11), install_flyte=False, name={name!r})\n"
        + (f"       .with_env_vars({{'BUST': {bust!r}}})\n" if bust else "")
        + f"       .with_apt_packages({apt!r}, 'jq').with_pip_packages({pip!r})\n"
        "       .with_source_folder(Path(__file__).parent / 'src', dst='/app'))\n"
    )
    return root


def edit_loop(root: Path, repeat: int) -> tuple[list[float], list[float]]:
    """Ours vs `docker buildx build` of the same Dockerfile from a fixed folder."""
    build = [*CLI, "build", str(root / "images.py"), "--load", "-q", "--ca-bundle", CA]
    run(build)  # warm: every layer cached
    fixed = root / "fixed"
    shutil.rmtree(fixed, ignore_errors=True)
    run([*CLI, "dockerfile", f"{root / 'images.py'}:app", "--ca-bundle", "--context", str(fixed)])
    tag = f"bench-floor:{uuid.uuid4().hex[:8]}"
    floor_cmd = [
        "docker",
        "buildx",
        "build",
        "--load",
        "-q",
        "-t",
        tag,
        "--secret",
        f"id=flyte-images-ca,src={CA}",
        str(fixed),
    ]
    run(floor_cmd)

    # Contents never written before: an image of an earlier run's edit would be found, not built.
    def ours() -> None:
        (root / "src" / "m007.py").write_text(f"VALUE = {uuid.uuid4().hex!r}\n")
        out = run([*build, "--json"])
        assert '"built"' in out, out

    def floor() -> None:
        (fixed / "_fi" / "3" / "src" / "m007.py").write_text(f"VALUE = {uuid.uuid4().hex!r}\n")
        run(floor_cmd)

    # In turns, so that a slow spell of this shared machine weighs on both alike.
    ours_t, floor_t = [], []
    for _ in range(repeat):
        ours_t += timed(ours, 1)
        floor_t += timed(floor, 1)
    return ours_t, floor_t


def cold(root: Path, repeat: int) -> tuple[list[float], list[float]]:
    """A fresh apt and pip package each run, so their layers are built; ours vs hand-written."""
    ours_t, hand_t = [], []
    for i in range(repeat):
        marker = uuid.uuid4().hex[:6]
        # A new env var before the packages: neither build can reuse a cached package layer.
        work = project(root / f"cold-{i}", "curl", "six", f"bench-cold-{marker}", bust=marker)
        hand = work / "hand"
        hand.mkdir()
        shutil.copytree(work / "src", hand / "src")
        (hand / "Dockerfile").write_text(
            "FROM python:3.11-slim-bookworm\n"
            f"ENV BUST={marker}\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends curl jq && rm -rf /var/lib/apt/lists/*\n"
            "RUN --mount=type=secret,id=ca python3 -m venv /opt/venv "
            "&& PIP_CERT=/run/secrets/ca /opt/venv/bin/pip install --no-cache-dir six\n"
            "COPY src /app/src\n"
        )
        start = time.perf_counter()
        run([*CLI, "build", str(work / "images.py"), "--load", "-q", "--ca-bundle", CA, "--force"])
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        run(
            [
                "docker",
                "buildx",
                "build",
                "--load",
                "-q",
                "-t",
                f"bench-hand:{marker}",
                "--secret",
                f"id=ca,src={CA}",
                str(hand),
            ]
        )
        hand_t.append(time.perf_counter() - start)
    return ours_t, hand_t


def noop(root: Path, repeat: int) -> list[float]:
    build = [*CLI, "build", str(root / "images.py"), "--load", "-q", "--ca-bundle", CA]
    run(build)
    return timed(lambda: run(build), repeat)


def warm_id(repeat: int) -> tuple[list[float], list[float], float]:
    """`flyte-images id` runs and stat floor runs, in blocks of five of each; the ratio is the
    median of the blocks' ratios, so that both sides of a ratio meet the machine in the same
    state (this VM's speed drifts by a third from one second to the next). Within a block the
    floor runs back to back, warm, as it always did."""
    sys.path.insert(0, str(HERE))
    from bench_identifier import make_tree, stat_floor

    root = Path(".bench/tree").resolve() / "src"
    make_tree(root, 10_000, 40_000_000)
    script = root.parent / "bench_images.py"
    script.write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        "img = Image.from_debian_base(python_version=(3, 12), install_flyte=False)"
        f".with_source_folder(Path({str(root)!r}))\n"
    )
    env = {**os.environ, "FLYTE_IMAGES_STAT_CACHE": "1"}
    run([*CLI, "id", str(script)], env=env)  # fills the stat cache file
    floor = stat_floor(root)
    ids: list[float] = []
    floors: list[float] = []
    ratios = []
    for _ in range(max(1, repeat // 5)):
        block = timed(lambda: run([*CLI, "id", str(script)], env=env), 5)
        floor_block = timed(floor, 5)
        ids += block
        floors += floor_block
        ratios.append(statistics.median(block) / statistics.median(floor_block))
    return ids, floors, statistics.median(ratios)


def line(label: str, times: list[float], floor: list[float] | None = None, ratio_of: float | None = None) -> str:
    med = statistics.median(times)
    if ratio_of is None and floor:
        ratio_of = med / statistics.median(floor)
    ratio = f"  {ratio_of:5.2f}x" if ratio_of is not None else ""
    return f"{label:<14} {med:7.3f}s  (min {min(times):.3f}, max {max(times):.3f}){ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9, help="runs of each build figure")
    parser.add_argument("--id-repeat", type=int, default=25, help="runs of each `id` figure, in blocks of 5")
    parser.add_argument("--cold-repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("FLYTE_IMAGES_CACHE_DIR", tempfile.mkdtemp(prefix="fi-bench-build-"))
    root = project(Path(tempfile.mkdtemp(prefix="fi-bench-build-")), "curl", "six", "bench-loop")
    ours, floor = edit_loop(root, args.repeat)
    nop = noop(root, args.repeat)
    ids, stat, id_ratio = warm_id(args.id_repeat)
    cold_ours, cold_hand = cold(root, args.cold_repeat)
    print("build benchmark (median of runs; ratio to the line below it)")
    print("every command in its own process")
    print(line("edit rebuild", ours, floor))
    print(line("  floor", floor))
    print(line("cold build", cold_ours, cold_hand))
    print(line("  hand-written", cold_hand))
    print(line("no-op build", nop))
    print(line("id (warm)", ids, stat, id_ratio))
    print(line("  stat floor", stat))
    goals = [
        ("edit rebuild <= 1.2x floor", statistics.median(ours) <= 1.2 * statistics.median(floor)),
        ("cold <= 1.05x hand-written", statistics.median(cold_ours) <= 1.05 * statistics.median(cold_hand)),
        ("no-op <= 0.2 s", statistics.median(nop) <= 0.2),
        ("warm id <= 2x stat floor", id_ratio <= 2),
    ]
    print("goals: " + ", ".join(f"{name} ({'met' if ok else 'MISSED'})" for name, ok in goals))


if __name__ == "__main__":
    main()
