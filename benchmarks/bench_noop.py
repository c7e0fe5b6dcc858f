"""CI no-op benchmark: three environments whose images are all in the registry, decided by
`flyte-images build` on a fresh runner (empty HOME and cache folder, as a CI job starts).

Prints the median time of the command in its own process and what it wrote, beside the
process floor `python -c "import flyte_images"`. (flyte's own check of existing images is timed
by bench_registry.py; its deploy needs a Flyte backend, which this machine does not have.)
Needs the engine set up (fixtures/engine/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
_SCRIPT = Path(sys.executable).parent / "flyte-images"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "flyte_images._cli"]

IMAGES = """
from pathlib import Path
from flyte_images import Image, TaskEnvironment
HERE = Path(__file__).parent
def base(name):
    return Image.from_debian_base(python_version=(3, 11), install_flyte=False, registry={registry!r}, name=name)
train = TaskEnvironment("train", image=base("noop-train").with_pip_packages("six").with_source_folder(HERE / "src"))
serve = TaskEnvironment("serve", image=base("noop-serve").with_requirements(HERE / "requirements.txt"))
batch = TaskEnvironment("batch", image=base("noop-batch").with_pip_packages("attrs").with_env_vars({{"A": "1"}}))
"""


def project(root: Path, registry: str) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(300):
        (src / f"m{i:03d}.py").write_bytes(os.urandom(2048))
    (root / "requirements.txt").write_text("six\nattrs\n")
    images = root / "images.py"
    images.write_text(IMAGES.format(registry=registry))
    return images


def written(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from engine_support import BUSYBOX, docker, engine_problem, registry

    problem = engine_problem()
    if problem:
        sys.exit(f"no-op benchmark needs the engine: {problem} (run fixtures/engine/setup.sh)")
    tmp = Path(tempfile.mkdtemp(prefix="fi-bench-noop-"))
    with registry() as reg:
        images = project(tmp / "project", reg.host)
        listed = subprocess.run([*CLI, "id", str(images), "--json"], capture_output=True, text=True, check=True)
        for uri in sorted({entry["uri"] for entry in json.loads(listed.stdout)["images"]}):
            docker("tag", BUSYBOX, uri)
            docker("push", uri)
        times, sizes = [], []
        for _ in range(args.repeat):
            fresh = tmp / "runner"
            shutil.rmtree(fresh, ignore_errors=True)
            env = {**os.environ, "HOME": str(fresh), "FLYTE_IMAGES_CACHE_DIR": str(fresh / "cache"), "CI": "true"}
            start = time.perf_counter()
            done = subprocess.run(
                [*CLI, "build", str(images), "--json", "-q"], check=False, capture_output=True, text=True, env=env
            )
            times.append(time.perf_counter() - start)
            if done.returncode != 0 or set(json.loads(done.stdout)["status"].values()) != {"exists"}:
                sys.exit(f"the no-op built or failed:\n{done.stdout}\n{done.stderr}")
            sizes.append(written(fresh))
        floor = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import flyte_images"], check=True)
            floor.append(time.perf_counter() - start)
    shutil.rmtree(tmp, ignore_errors=True)
    median = statistics.median(times)
    print("CI no-op: three environments that exist, fresh runner (median of runs, own process)")
    print(f"  flyte-images build --json     {median:.3f} s  (min {min(times):.3f}, max {max(times):.3f})")
    print(f"  written to HOME and cache     {max(sizes) / 1024:.1f} KiB")
    print(f"  floor: import flyte_images    {statistics.median(floor):.3f} s")
    goals = [("<= 1 s", median <= 1.0), ("<= 1 MB written", max(sizes) <= 1 << 20)]
    print("goals: " + ", ".join(f"{name} ({'met' if ok else 'MISSED'})" for name, ok in goals))


if __name__ == "__main__":
    main()
