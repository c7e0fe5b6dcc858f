"""Identifier benchmark: a generated tree of 10,000 files (~40 MB) copied by one source-folder layer.

Prints, in one run and on the same tree:
  floor        walk + read + SHA-256 of every file, the least any content hash can cost
  cold         our identifier with no stat cache (what CI pays)
  warm         our identifier again in the same process (stat cache in memory)
  warm-proc    our identifier in a new process (stat cache loaded from disk)
  stat floor   one stat per folder and file: the least a warm identifier can cost
  flyte        flyte's Image identifier (the original tool) for the same image
Each time is the best of --repeat runs; the files are in the page cache for all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_tree(root: Path, files: int, total_bytes: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    mean = total_bytes // files
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{files}:{total_bytes}:{seed}":
        return
    for index in range(files):
        folder = root / f"pkg{index % 50:02d}" / f"mod{(index // 50) % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = max(1, int(rng.expovariate(1 / mean)))
        (folder / f"f{index:05d}.py").write_bytes(rng.randbytes(size))
    marker.write_text(f"{files}:{total_bytes}:{seed}")


def floor(root: Path) -> str:
    outer = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            with open(os.path.join(dirpath, name), "rb") as handle:
                outer.update(hashlib.sha256(handle.read()).digest())
    return outer.hexdigest()


def stat_floor(root: Path):  # type: ignore[no-untyped-def]
    """A function making one stat per folder and file and nothing else (the names are listed
    beforehand): the least a warm identifier, which must notice any change, can cost."""
    folders = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folders.append((dirpath, sorted(filenames)))

    def run() -> None:
        for dirpath, names in folders:
            fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fstat(fd)
                for name in names:
                    os.stat(name, dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)

    return run


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ours_image(root: Path):
    from flyte_images import Image

    return Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_source_folder(root)


_WARM_PROC = """
import sys, time
from pathlib import Path
from flyte_images import Image
from flyte_images._plan.plan import image_digest
base = Image.from_debian_base(python_version=(3, 12), install_flyte=False)
image = base.with_source_folder(Path(sys.argv[1]))
start = time.perf_counter()
image_digest(image, use_stat_cache=True)
print(time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mbytes", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=Path(".bench/tree"))
    args = parser.parse_args()

    root = args.tree.resolve() / "src"
    make_tree(root, args.files, args.mbytes * 1_000_000)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"tree: {args.files} files, {size / 1e6:.1f} MB in {root}")

    from flyte_images._files.statcache import reset_shared_stat_cache
    from flyte_images._plan.plan import image_digest

    os.environ["FLYTE_IMAGES_CACHE_DIR"] = tempfile.mkdtemp(prefix="fi-bench-cache-")
    results: dict[str, float] = {}
    results["floor"] = best(lambda: floor(root), args.repeat)
    results["cold"] = best(lambda: image_digest(ours_image(root), use_stat_cache=False), args.repeat)
    reset_shared_stat_cache()
    image_digest(ours_image(root), use_stat_cache=True)  # fills the cache
    results["warm"] = best(lambda: image_digest(ours_image(root), use_stat_cache=True), args.repeat)
    proc_times = []
    for _ in range(args.repeat):
        out = subprocess.run(
            [sys.executable, "-c", _WARM_PROC, str(root)], capture_output=True, text=True, check=True
        ).stdout
        proc_times.append(float(out))
    results["warm-proc"] = min(proc_times)
    results["stat floor"] = best(stat_floor(root), args.repeat)

    try:
        import flyte

        def flyte_id() -> str:
            image = flyte.Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="bench")
            return image.with_source_folder(root)._get_hash_digest()

        results["flyte"] = best(flyte_id, args.repeat)
        flyte_label = f"flyte {flyte.__version__}"
    except ImportError:
        flyte_label = "flyte (not installed)"

    print(f"{'measure':<12} {'seconds':>9}  vs floor")
    for key, seconds in results.items():
        label = flyte_label if key == "flyte" else key
        print(f"{label:<12} {seconds:9.4f}  {seconds / results['floor']:5.2f}x")
    print(
        f"goals: cold <= 1.3x floor ({'met' if results['cold'] <= 1.3 * results['floor'] else 'MISSED'}), "
        f"warm <= 20 ms ({'met' if results['warm'] <= 0.020 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
