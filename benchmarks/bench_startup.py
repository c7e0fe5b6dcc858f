"""Start-up benchmark: short commands in their own process, beside the cost of the import alone.

  import        `python -c "import flyte_images"` (the floor of any command of the package)
  --help        `flyte-images --help`
  id (demo)     `flyte-images id fixtures/examples/demo_images.py` (the demo project: a base
                reference and a built image with apt, pip, a source folder and an env var)
  flyte import  `python -c "import flyte"` of the original package, for scale
Each figure is the median of --repeat runs (min and max beside it), the runs of all rows taking
turns so that a slow spell of the machine weighs on each alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).parent / "flyte-images"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "flyte_images._cli"]
BUDGET_ID_S = 0.15


def once(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def line(label: str, times: list[float], floor: list[float] | None = None) -> str:
    med = statistics.median(times)
    ratio = f"  {med / statistics.median(floor):5.2f}x import" if floor else ""
    return f"{label:<14} {med:7.3f}s  (min {min(times):.3f}, max {max(times):.3f}){ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    env = {**os.environ, "FLYTE_IMAGES_CACHE_DIR": tempfile.mkdtemp(prefix="fi-bench-startup-")}
    env.pop("CI", None)  # as on a developer's machine: the stat cache is on
    rows = {
        "import": [sys.executable, "-c", "import flyte_images"],
        "--help": [*CLI, "--help"],
        "id (demo)": [*CLI, "id", "fixtures/examples/demo_images.py"],
        "flyte import": [sys.executable, "-c", "import flyte"],
    }
    for command in rows.values():
        once(command, env)  # bytecode and the stat cache written, files in the page cache
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeat):
        for name, command in rows.items():
            times[name].append(once(command, env))
    print("start-up benchmark: each command in its own process (median of runs)")
    print(line("import", times["import"]))
    print(line("--help", times["--help"], times["import"]))
    print(line("id (demo)", times["id (demo)"], times["import"]))
    print(line("flyte import", times["flyte import"], times["import"]))
    met = statistics.median(times["id (demo)"]) <= BUDGET_ID_S
    print(f"goals: id of the demo project <= {BUDGET_ID_S} s ({'met' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
